package router

import (
	"context"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// RedisLimiter is the per tenant per channel GCRA rate limit, on Redis with
// redis_rate; keys are {prefix}{tenant_id}:ratelimit:{channel}.
type RedisLimiter struct {
	lim    *redis_rate.Limiter
	prefix string
	limit  redis_rate.Limit
}

// NewLimiter allows perMinute messages per tenant per channel (bursts of up
// to perMinute, refilled evenly over the minute).
func NewLimiter(rdb redis.UniversalClient, prefix string, perMinute int) *RedisLimiter {
	return &RedisLimiter{
		lim:    redis_rate.NewLimiter(unprefixed{rdb}),
		prefix: prefix,
		limit:  redis_rate.PerMinute(max(perMinute, 1)),
	}
}

// Allow takes one message from the tenant's budget in the channel.
func (l *RedisLimiter) Allow(ctx context.Context, tenantID, channelID string) (bool, time.Duration, error) {
	res, err := l.lim.Allow(ctx, l.prefix+tenantID+":ratelimit:"+channelID, l.limit)
	if err != nil {
		return false, 0, err
	}
	return res.Allowed > 0, res.RetryAfter, nil
}

// unprefixed removes the "rate:" redis_rate puts before every key, so that
// our keys live under redis.prefix like all others (one prefix to scan,
// clean up or grant ACLs on).
type unprefixed struct{ redis.UniversalClient }

const rateKeyPrefix = "rate:"

func strip(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = strings.TrimPrefix(k, rateKeyPrefix)
	}
	return out
}

func (u unprefixed) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return u.UniversalClient.Eval(ctx, script, strip(keys), args...)
}

func (u unprefixed) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return u.UniversalClient.EvalSha(ctx, sha1, strip(keys), args...)
}

func (u unprefixed) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return u.UniversalClient.EvalRO(ctx, script, strip(keys), args...)
}

func (u unprefixed) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return u.UniversalClient.EvalShaRO(ctx, sha1, strip(keys), args...)
}

func (u unprefixed) Del(ctx context.Context, keys ...string) *redis.IntCmd {
	return u.UniversalClient.Del(ctx, strip(keys)...)
}
