package router

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Threads remembers the threads the bot is engaged in: after an exchange in
// a thread, later human messages there are answered without a new mention
// until TTL passes without another exchange. The router reads it; workers
// refresh it after each answer.
type Threads struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
}

// NewThreads returns Threads storing keys under prefix (redis.prefix).
func NewThreads(rdb redis.UniversalClient, prefix string, ttl time.Duration) *Threads {
	return &Threads{rdb: rdb, prefix: prefix, ttl: ttl}
}

// Key is {prefix}{tenant_id}:engaged:{channel}:{thread_ts}.
func (t *Threads) Key(tenantID, channelID, threadTS string) string {
	return fmt.Sprintf("%s%s:engaged:%s:%s", t.prefix, tenantID, channelID, threadTS)
}

// Engage marks the thread engaged for TTL from now (refreshing it).
func (t *Threads) Engage(ctx context.Context, tenantID, channelID, threadTS string) error {
	if err := t.rdb.Set(ctx, t.Key(tenantID, channelID, threadTS), 1, t.ttl).Err(); err != nil {
		return fmt.Errorf("engage thread: %w", err)
	}
	return nil
}

// Engaged reports whether the bot is engaged in the thread.
func (t *Threads) Engaged(ctx context.Context, tenantID, channelID, threadTS string) (bool, error) {
	n, err := t.rdb.Exists(ctx, t.Key(tenantID, channelID, threadTS)).Result()
	if err != nil {
		return false, fmt.Errorf("engaged thread: %w", err)
	}
	return n == 1, nil
}
