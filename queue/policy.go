package queue

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// What the tenants' policies keep in Redis (keys.go): the follow window of
// threads under each tenant's own TTL, the tokens each tenant spent per UTC
// day and month (its budgets), and the "once per person per UTC day" of the
// short notes the router sends (the DM outside the policy, the budget
// that is used up).

// EngageFor marks the thread engaged for ttl from now (0: the install's
// threads.engaged_ttl): later human messages in it are answered without a
// new mention while it lasts.
func (q *Queue) EngageFor(ctx context.Context, tenantID, channelID, threadTS string, ttl time.Duration) error {
	if ttl <= 0 {
		ttl = q.cfg.EngagedTTL
	}
	if err := q.rdb.Set(ctx, q.keys.engaged(tenantID, channelID, threadTS), 1, ttl).Err(); err != nil {
		return unavailable("engage thread", err)
	}
	return nil
}

// Token counters outlive their period by a margin, for the reports of
// late readers and the reconciliation of an answer that ends just after
// midnight.
const (
	tokensDayTTL   = 48 * time.Hour
	tokensMonthTTL = 35 * 24 * time.Hour
)

// addTokensScript adds n to the tenant's day and month counters and sets
// their TTL, and returns both totals.
//
//	KEYS: day, month (one tenant: one hash tag); ARGV: n, day ttl ms, month ttl ms
var addTokensScript = redis.NewScript(`
local d = redis.call("INCRBY", KEYS[1], ARGV[1])
redis.call("PEXPIRE", KEYS[1], ARGV[2])
local m = redis.call("INCRBY", KEYS[2], ARGV[1])
redis.call("PEXPIRE", KEYS[2], ARGV[3])
return {d, m}`)

// AddTokens adds n LLM tokens (n may be negative: a correction of an
// estimate) to what the tenant spent in the UTC day and month of at, and
// returns the totals of both.
func (q *Queue) AddTokens(ctx context.Context, tenantID string, at time.Time, n int64) (day, month int64, err error) {
	res, err := addTokensScript.Run(ctx, q.rdb, []string{q.keys.tokensDay(tenantID, at), q.keys.tokensMonth(tenantID, at)},
		n, tokensDayTTL.Milliseconds(), tokensMonthTTL.Milliseconds()).Int64Slice()
	if err == nil && len(res) != 2 {
		err = errors.New("unexpected reply")
	}
	if err != nil {
		return 0, 0, unavailable("count tokens", err)
	}
	return res[0], res[1], nil
}

// TokensUsed returns what the tenant spent in the UTC day and month of at.
func (q *Queue) TokensUsed(ctx context.Context, tenantID string, at time.Time) (day, month int64, err error) {
	// Two GETs, not an MGET: a Cluster takes a multi-key read of one slot
	// only, and a pipeline is as quick.
	pipe := q.rdb.Pipeline()
	d := pipe.Get(ctx, q.keys.tokensDay(tenantID, at))
	m := pipe.Get(ctx, q.keys.tokensMonth(tenantID, at))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return 0, 0, unavailable("read tokens", err)
	}
	day, _ = d.Int64()
	month, _ = m.Int64()
	return day, month, nil
}

// noteTTL outlives the UTC day a note key is named after.
const noteTTL = 25 * time.Hour

// NoteOnce reports whether the note of kind ("dm", "budget") may be sent to
// a person on the UTC day of at: true the first time that day, false after.
// A note that could not be sent is given back with ForgetNote.
func (q *Queue) NoteOnce(ctx context.Context, tenantID, kind, teamID, userID string, at time.Time) (bool, error) {
	ok, err := q.rdb.SetNX(ctx, q.keys.note(tenantID, kind, teamID, userID, at), 1, noteTTL).Result()
	if err != nil {
		return false, unavailable("note once a day", err)
	}
	return ok, nil
}

// ForgetNote undoes NoteOnce, so that the next message may carry the note.
func (q *Queue) ForgetNote(ctx context.Context, tenantID, kind, teamID, userID string, at time.Time) error {
	if err := q.rdb.Del(ctx, q.keys.note(tenantID, kind, teamID, userID, at)).Err(); err != nil {
		return unavailable("forget note", err)
	}
	return nil
}
