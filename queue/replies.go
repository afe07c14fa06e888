package queue

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/konstruct/konstruct"
)

// cleanupAfter is when the janitor looks again at a reply answered with
// placeholders still to delete.
const cleanupAfter = 10 * time.Second

// LockTTL bounds how long a crashed lease holder blocks the next delivery
// of its reply; a held lease is extended every LockTTL/3.
const LockTTL = 45 * time.Second

// replyHash is the reply state as a Redis hash (keys.go: <p>{<t>}:reply:…).
type replyHash struct {
	Stage         string `redis:"stage"`
	ThreadTS      string `redis:"thread_ts"`
	EventID       string `redis:"event_id"`
	PlaceholderTS string `redis:"placeholder_ts"`
	StreamTS      string `redis:"stream_ts"`
	FollowUps     string `redis:"follow_ups"` // JSON list
	Cleanup       string `redis:"cleanup"`    // JSON list
	Text          string `redis:"text"`
	Outcome       string `redis:"outcome"`
	ErrorCode     string `redis:"error_code"`
	Stats         string `redis:"stats"`   // JSON
	Job           string `redis:"job"`     // JSON
	Started       int64  `redis:"started"` // Unix ms
}

// LoadReply reads the state of a post's reply; ok is false when it has none.
func (q *Queue) LoadReply(ctx context.Context, post konstruct.Post) (st konstruct.ReplyState, ok bool, err error) {
	res := q.rdb.HGetAll(ctx, q.keys.reply(post))
	if err := res.Err(); err != nil {
		return st, false, unavailable("read reply state", err)
	}
	if len(res.Val()) == 0 {
		return konstruct.ReplyState{Post: post}, false, nil
	}
	var h replyHash
	if err := res.Scan(&h); err != nil {
		return st, false, unavailable("read reply state", err)
	}
	st = konstruct.ReplyState{
		Post: post, ThreadTS: h.ThreadTS, EventID: h.EventID, Stage: konstruct.ReplyStage(h.Stage),
		PlaceholderTS: h.PlaceholderTS, StreamTS: h.StreamTS, Text: h.Text, Outcome: h.Outcome, ErrorCode: h.ErrorCode,
	}
	if h.FollowUps != "" {
		_ = json.Unmarshal([]byte(h.FollowUps), &st.FollowUps)
	}
	if h.Cleanup != "" {
		_ = json.Unmarshal([]byte(h.Cleanup), &st.Cleanup)
	}
	if h.Stats != "" {
		_ = json.Unmarshal([]byte(h.Stats), &st.Stats)
	}
	if h.Job != "" {
		var job konstruct.ReplyJob
		if json.Unmarshal([]byte(h.Job), &job) == nil {
			st.Job = &job
		}
	}
	if h.Started > 0 {
		st.Started = time.UnixMilli(h.Started)
	}
	return st, true, nil
}

// saveScript writes fields of a reply's hash and refreshes its TTL.
//
//	KEYS: reply; ARGV: ttl ms, then field, value, …
var saveScript = redis.NewScript(`
redis.call("HSET", KEYS[1], unpack(ARGV, 2))
redis.call("PEXPIRE", KEYS[1], ARGV[1])
return 1`)

// SaveReply writes the whole state of a reply (only the lease holder
// writes), and refreshes its TTL.
//
// The reply's hash and the janitor's index are keys of different hash
// slots (keys.go), written one after the other, in the order that leaves
// nothing undone after a crash between the two: a reply done with a
// placeholder still to delete is indexed (the janitor comes back for it)
// before it is marked done; a reply done is marked before it leaves the
// index (a janitor that still finds it sees it done and drops it).
func (q *Queue) SaveReply(ctx context.Context, st konstruct.ReplyState) error {
	done := st.Stage == konstruct.StageDone
	if done && len(st.Cleanup) > 0 {
		// Answered; a replaced placeholder is still to be deleted: the
		// janitor comes back for it soon.
		if err := q.rdb.ZAdd(ctx, q.keys.inflight(), redis.Z{Score: float64(q.cfg.Now().Add(cleanupAfter).UnixMilli()), Member: st.Post.String()}).Err(); err != nil {
			return unavailable("write reply state", err)
		}
	}
	if err := saveScript.Run(ctx, q.rdb, []string{q.keys.reply(st.Post)}, append([]any{q.cfg.ReplyTTL.Milliseconds()}, replyFields(st)...)...).Err(); err != nil {
		return unavailable("write reply state", err)
	}
	if done && len(st.Cleanup) == 0 {
		if err := q.rdb.ZRem(ctx, q.keys.inflight(), st.Post.String()).Err(); err != nil {
			return unavailable("write reply state", err)
		}
	}
	return nil
}

// replyFields is the hash of a state.
func replyFields(st konstruct.ReplyState) []any {
	fu, _ := json.Marshal(st.FollowUps)
	cl, _ := json.Marshal(st.Cleanup)
	stats, _ := json.Marshal(st.Stats)
	f := []any{
		"stage", string(st.Stage), "thread_ts", st.ThreadTS, "event_id", st.EventID,
		"placeholder_ts", st.PlaceholderTS, "stream_ts", st.StreamTS, "follow_ups", string(fu), "cleanup", string(cl),
		"text", st.Text, "outcome", st.Outcome, "error_code", st.ErrorCode, "stats", string(stats),
	}
	if st.Job != nil {
		job, _ := json.Marshal(st.Job)
		f = append(f, "job", string(job))
	}
	if !st.Started.IsZero() {
		f = append(f, "started", st.Started.UnixMilli())
	}
	return f
}

// ClaimPlaceholder records ts as the reply's placeholder unless one is
// recorded already, and returns the one that holds: two deliveries that
// each posted one keep the first, and the other is theirs to delete.
func (q *Queue) ClaimPlaceholder(ctx context.Context, post konstruct.Post, ts string) (string, error) {
	held, err := claimPlaceholderScript.Run(ctx, q.rdb, []string{q.keys.reply(post)}, ts, q.cfg.ReplyTTL.Milliseconds()).Text()
	if err != nil {
		return "", unavailable("write reply state", err)
	}
	return held, nil
}

// claimPlaceholderScript: KEYS: reply; ARGV: ts, ttl ms. It returns the
// placeholder that holds.
var claimPlaceholderScript = redis.NewScript(`
redis.call("HSETNX", KEYS[1], "placeholder_ts", ARGV[1])
redis.call("PEXPIRE", KEYS[1], ARGV[2])
return redis.call("HGET", KEYS[1], "placeholder_ts")`)

// Lease is the exclusive right to write one reply. While held it is
// extended in the background and, once Track was called, the reply's
// janitor deadline is pushed back with it; Release ends it.
type Lease struct {
	q        *Queue
	post     konstruct.Post
	token    string
	tracking atomic.Bool

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

var unlockScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
var extendScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`)

// AcquireReply takes the lease of a post's reply. When another process
// holds it the error has code ECONFLICT. lost is called (once, from the
// background) if the lease is lost while held, e.g. because Redis could not
// extend it for LockTTL and another process took it.
func (q *Queue) AcquireReply(ctx context.Context, post konstruct.Post, lost func()) (konstruct.Lease, error) {
	token := strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.FormatUint(rand.Uint64(), 36)
	ok, err := q.rdb.SetNX(ctx, q.keys.replyLock(post), token, LockTTL).Result()
	if err != nil {
		return nil, unavailable("lock reply", err)
	}
	if !ok {
		return nil, konstruct.Errorf(konstruct.ECONFLICT, "another delivery of this reply is running")
	}
	l := &Lease{q: q, post: post, token: token, stop: make(chan struct{}), done: make(chan struct{})}
	go l.keep(context.WithoutCancel(ctx), lost)
	return l, nil
}

// Track marks the reply in flight: the janitor leaves it alone while the
// lease is held, and takes it over OrphanAfter after the last extension.
func (l *Lease) Track(ctx context.Context) error {
	l.tracking.Store(true)
	return l.q.heartbeat(ctx, l.post)
}

func (l *Lease) keep(ctx context.Context, lost func()) {
	defer close(l.done)
	t := time.NewTicker(min(l.q.cfg.OrphanAfter/4, LockTTL/3))
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, LockTTL/3)
		if l.tracking.Load() {
			_ = l.q.heartbeat(cctx, l.post)
		}
		n, err := extendScript.Run(cctx, l.q.rdb, []string{l.q.keys.replyLock(l.post)}, l.token, LockTTL.Milliseconds()).Int()
		cancel()
		if err == nil && n == 0 {
			if lost != nil {
				lost()
			}
			return
		}
	}
}

// Release stops extending the lease and gives it up. Safe to call twice.
func (l *Lease) Release(ctx context.Context) {
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		_ = unlockScript.Run(ctx, l.q.rdb, []string{l.q.keys.replyLock(l.post)}, l.token).Err()
	})
}

// heartbeat pushes the janitor's deadline for a reply OrphanAfter ahead.
func (q *Queue) heartbeat(ctx context.Context, post konstruct.Post) error {
	deadline := q.cfg.Now().Add(q.cfg.OrphanAfter)
	if err := q.rdb.ZAdd(ctx, q.keys.inflight(), redis.Z{Score: float64(deadline.UnixMilli()), Member: post.String()}).Err(); err != nil {
		return unavailable("reply heartbeat", err)
	}
	return nil
}

// DueReplies lists up to n unfinished replies whose heartbeat ran out.
func (q *Queue) DueReplies(ctx context.Context, n int) ([]konstruct.Post, error) {
	members, err := q.rdb.ZRangeByScore(ctx, q.keys.inflight(), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(q.cfg.Now().UnixMilli(), 10), Count: int64(n),
	}).Result()
	if err != nil {
		return nil, unavailable("list orphaned replies", err)
	}
	out := make([]konstruct.Post, 0, len(members))
	for _, m := range members {
		p, ok := parsePost(m)
		if !ok {
			q.rdb.ZRem(ctx, q.keys.inflight(), m) // not ours to resolve: a stray member
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// ClaimDue takes a due reply out of the janitor's index; only one of
// several janitors wins it.
func (q *Queue) ClaimDue(ctx context.Context, post konstruct.Post) (bool, error) {
	n, err := q.rdb.ZRem(ctx, q.keys.inflight(), post.String()).Result()
	if err != nil {
		return false, unavailable("claim orphaned reply", err)
	}
	return n == 1, nil
}

// Reschedule puts a reply back in the janitor's index, due at the given time.
func (q *Queue) Reschedule(ctx context.Context, post konstruct.Post, at time.Time) error {
	if err := q.rdb.ZAdd(ctx, q.keys.inflight(), redis.Z{Score: float64(at.UnixMilli()), Member: post.String()}).Err(); err != nil {
		return unavailable("reschedule orphaned reply", err)
	}
	return nil
}

// BeginReply records st as the state of its post's reply unless the reply
// has a state already, puts the reply in the janitor's index (due after
// OrphanAfter, unless a worker's heartbeat pushes it back), and returns the
// state that holds.
//
// The state is written first, then indexed (keys of different hash slots):
// the router routes the record again until this returned, and a janitor
// that finds an index entry without a state drops it.
func (q *Queue) BeginReply(ctx context.Context, st konstruct.ReplyState) (konstruct.ReplyState, error) {
	if st.Started.IsZero() {
		st.Started = q.cfg.Now()
	}
	f := replyFields(st)
	args := []any{q.cfg.ReplyTTL.Milliseconds()}
	for i := 0; i+1 < len(f); i += 2 {
		if v, _ := f[i+1].(string); v == "" && f[i] != "started" {
			continue
		}
		args = append(args, f[i], f[i+1])
	}
	if err := beginScript.Run(ctx, q.rdb, []string{q.keys.reply(st.Post)}, args...).Err(); err != nil {
		return st, unavailable("begin reply", err)
	}
	if err := q.rdb.ZAddNX(ctx, q.keys.inflight(), redis.Z{Score: float64(q.cfg.Now().Add(q.cfg.OrphanAfter).UnixMilli()), Member: st.Post.String()}).Err(); err != nil {
		return st, unavailable("begin reply", err)
	}
	got, _, err := q.LoadReply(ctx, st.Post)
	return got, err
}

// beginScript sets the fields a reply's hash does not have yet.
//
//	KEYS: reply; ARGV: ttl ms, then field, value, …
var beginScript = redis.NewScript(`
for i = 2, #ARGV, 2 do redis.call("HSETNX", KEYS[1], ARGV[i], ARGV[i+1]) end
redis.call("PEXPIRE", KEYS[1], ARGV[1])
return 1`)
