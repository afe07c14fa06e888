package queue

import (
	"context"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/konstruct/konstruct"
)

// claimScript takes the claim keys (event, post) for an owner: a key that is
// free is set to the owner with the dedupe TTL; a key held by the same owner
// counts as taken by it (the owner's own retry); a key held by another owner
// makes the message a duplicate. It returns 1 when every key is the
// owner's, 0 for a duplicate; nothing is set in that case.
var claimScript = redis.NewScript(`
for i, k in ipairs(KEYS) do
  local v = redis.call("GET", k)
  if v and (ARGV[1] == "" or v ~= ARGV[1]) then return 0 end
end
for i, k in ipairs(KEYS) do
  redis.call("SET", k, ARGV[1] == "" and "1" or ARGV[1], "PX", ARGV[2])
end
return 1`)

// Claim marks a message as taken and reports whether someone else took it
// already (a Slack retry, the app_mention/message twin of the post, another
// daemon). The post key catches twins, which have different event ids. An
// owner (the durable record of the delivery) that claims again is not a
// duplicate of itself; with owner "" any earlier claim is.
func (q *Queue) Claim(ctx context.Context, post konstruct.Post, eventID, owner string) (dup bool, err error) {
	ks := []string{q.keys.post(post)}
	if eventID != "" {
		ks = append(ks, q.keys.event(post.TenantID, eventID))
	}
	n, err := claimScript.Run(ctx, q.rdb, ks, owner, q.cfg.DedupeTTL.Milliseconds()).Int()
	if err != nil {
		return false, unavailable("dedupe claim", err)
	}
	return n == 0, nil
}

// Engage marks the thread engaged for the engaged TTL from now: later human
// messages in it are answered without a new mention.
func (q *Queue) Engage(ctx context.Context, tenantID, channelID, threadTS string) error {
	if err := q.rdb.Set(ctx, q.keys.engaged(tenantID, channelID, threadTS), 1, q.cfg.EngagedTTL).Err(); err != nil {
		return unavailable("engage thread", err)
	}
	return nil
}

// Engaged reports whether the bot is engaged in the thread.
func (q *Queue) Engaged(ctx context.Context, tenantID, channelID, threadTS string) (bool, error) {
	n, err := q.rdb.Exists(ctx, q.keys.engaged(tenantID, channelID, threadTS)).Result()
	if err != nil {
		return false, unavailable("engaged thread", err)
	}
	return n == 1, nil
}

// Allow takes one message from the person's budget in the channel and
// from the tenant's (GCRA: bursts up to the per-minute rate, refilled
// evenly over the minute): one person cannot exhaust a channel for everyone,
// nor a channel the tenant.
func (q *Queue) Allow(ctx context.Context, tenantID, channelID, userID string) (konstruct.RateLimit, error) {
	res, err := q.limiter.lim.Allow(ctx, q.keys.rateLimitUser(tenantID, channelID, userID), q.limiter.perUser)
	if err != nil {
		return konstruct.RateLimit{}, unavailable("rate limit", err)
	}
	if res.Allowed > 0 {
		if res, err = q.limiter.lim.Allow(ctx, q.keys.rateLimit(tenantID, channelID), q.limiter.limit); err != nil {
			return konstruct.RateLimit{}, unavailable("rate limit", err)
		}
		if res.Allowed > 0 {
			return konstruct.RateLimit{OK: true}, nil
		}
	}
	l := konstruct.RateLimit{RetryAfter: res.RetryAfter}
	notified, err := q.rdb.SetNX(ctx, q.keys.rateNote(tenantID, channelID, userID), 1, max(res.RetryAfter, time.Second)).Result()
	if err != nil {
		return konstruct.RateLimit{}, unavailable("rate limit", err)
	}
	l.Notify = notified
	return l, nil
}

type limiter struct {
	lim     *redis_rate.Limiter
	limit   redis_rate.Limit // per tenant per channel
	perUser redis_rate.Limit // per person per channel
}

func newLimiter(rdb redis.UniversalClient, perMinute, perUserPerMinute int) *limiter {
	return &limiter{lim: redis_rate.NewLimiter(unprefixed{rdb}),
		limit: redis_rate.PerMinute(max(perMinute, 1)), perUser: redis_rate.PerMinute(max(perUserPerMinute, 1))}
}

// unprefixed removes the "rate:" redis_rate puts before every key, so that
// the limiter's keys follow the layout of keys.go like all others (one
// prefix to scan, clean up or grant ACLs on).
type unprefixed struct{ redis.UniversalClient }

const rateKeyPrefix = "rate:"

func strip(ks []string) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = strings.TrimPrefix(k, rateKeyPrefix)
	}
	return out
}

func (u unprefixed) Eval(ctx context.Context, script string, ks []string, args ...any) *redis.Cmd {
	return u.UniversalClient.Eval(ctx, script, strip(ks), args...)
}

func (u unprefixed) EvalSha(ctx context.Context, sha1 string, ks []string, args ...any) *redis.Cmd {
	return u.UniversalClient.EvalSha(ctx, sha1, strip(ks), args...)
}

func (u unprefixed) EvalRO(ctx context.Context, script string, ks []string, args ...any) *redis.Cmd {
	return u.UniversalClient.EvalRO(ctx, script, strip(ks), args...)
}

func (u unprefixed) EvalShaRO(ctx context.Context, sha1 string, ks []string, args ...any) *redis.Cmd {
	return u.UniversalClient.EvalShaRO(ctx, sha1, strip(ks), args...)
}

func (u unprefixed) Del(ctx context.Context, ks ...string) *redis.IntCmd {
	return u.UniversalClient.Del(ctx, strip(ks)...)
}
