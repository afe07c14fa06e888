package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/konstruct/konstruct"
)

// Reply states, in order. A record moves forward only.
const (
	stateStarted   = "started"   // placeholder known, nothing generated yet
	stateStreaming = "streaming" // the model is answering into the placeholder
	stateGenerated = "generated" // the final text is stored: only delivery is left
	stateDone      = "done"      // the thread shows the answer (or the error): nothing left
)

// progress is the Redis record of one reply, a hash at
// {prefix}{tenant_id}:reply:{post or event id}.
type progress struct {
	State         string   `redis:"state"`
	TenantID      string   `redis:"tenant_id"`
	TeamID        string   `redis:"team_id"`
	ChannelID     string   `redis:"channel_id"`
	ThreadTS      string   `redis:"thread_ts"`
	EventID       string   `redis:"event_id"`
	PlaceholderTS string   `redis:"placeholder_ts"`
	StreamTS      string   `redis:"stream_ts"` // native streaming: the streamed message
	FollowUps     []string `redis:"-"`         // stored as JSON in "followups"
	Text          string   `redis:"text"`      // the final Markdown, once generated
	Outcome       string   `redis:"outcome"`
	ErrorCode     string   `redis:"error_code"`
	Stats         string   `redis:"stats"` // JSON of replyStats
}

// replyStats is what the replies row needs from the generation, kept so a
// retry that only delivers can still record it.
type replyStats struct {
	Model            string        `json:"model"`
	Provider         string        `json:"provider"`
	PromptTokens     int           `json:"prompt_tokens"`
	CompletionTokens int           `json:"completion_tokens"`
	TimeToFirstToken time.Duration `json:"ttft"`
	Latency          time.Duration `json:"latency"`
}

// mainTS is the message that carries the first part of the answer.
func (p *progress) mainTS() string {
	if p.StreamTS != "" {
		return p.StreamTS
	}
	return p.PlaceholderTS
}

func (p *progress) stats() replyStats {
	var s replyStats
	if p.Stats != "" {
		_ = json.Unmarshal([]byte(p.Stats), &s)
	}
	return s
}

// replyID names a reply: the post id (shared by the app_mention and message
// twins of one post), else the event id.
func replyID(m konstruct.Message) string {
	if m.ID != "" {
		return m.ID
	}
	if m.EventID != "" {
		return m.EventID
	}
	return m.TeamID + "/" + m.ChannelID + "/" + m.TS
}

func (w *Server) progressKey(m konstruct.Message) string {
	return fmt.Sprintf("%s%s:reply:%s", w.cfg.Prefix, m.TenantID, replyID(m))
}

// inflightKey indexes the progress keys of unfinished replies by the time
// their heartbeat runs out; the janitor reads it.
func (w *Server) inflightKey() string { return w.cfg.Prefix + "replies:inflight" }

// record is one reply's view of its record.
type record struct {
	w   *Server
	rdb redis.UniversalClient
	key string
}

func (w *Server) recordFor(key string) *record { return &record{w: w, rdb: w.deps.Redis, key: key} }

func (s *record) load(ctx context.Context) (*progress, bool, error) {
	vals, err := s.rdb.HGetAll(ctx, s.key).Result()
	if err != nil {
		return nil, false, redisErr("read reply progress", err)
	}
	if len(vals) == 0 {
		return &progress{}, false, nil
	}
	p := &progress{
		State: vals["state"], TenantID: vals["tenant_id"], TeamID: vals["team_id"], ChannelID: vals["channel_id"],
		ThreadTS: vals["thread_ts"], EventID: vals["event_id"], PlaceholderTS: vals["placeholder_ts"],
		StreamTS: vals["stream_ts"], Text: vals["text"], Outcome: vals["outcome"], ErrorCode: vals["error_code"],
		Stats: vals["stats"],
	}
	if f := vals["followups"]; f != "" {
		_ = json.Unmarshal([]byte(f), &p.FollowUps)
	}
	return p, true, nil
}

// set writes fields and refreshes the record's TTL.
func (s *record) set(ctx context.Context, kv ...any) error {
	pipe := s.rdb.TxPipeline()
	pipe.HSet(ctx, s.key, kv...)
	pipe.Expire(ctx, s.key, s.w.cfg.RecordTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return redisErr("write reply progress", err)
	}
	return nil
}

// setNX writes a field only when absent and returns the value that holds.
func (s *record) setNX(ctx context.Context, field, value string) (string, error) {
	pipe := s.rdb.TxPipeline()
	pipe.HSetNX(ctx, s.key, field, value)
	get := pipe.HGet(ctx, s.key, field)
	pipe.Expire(ctx, s.key, s.w.cfg.RecordTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return "", redisErr("write reply progress", err)
	}
	return get.Val(), nil
}

func (s *record) setFollowUps(ctx context.Context, ts []string) error {
	b, _ := json.Marshal(ts)
	return s.set(ctx, "followups", string(b))
}

// finish marks the reply done and drops it from the janitor's index.
func (s *record) finish(ctx context.Context, outcome, code string) error {
	pipe := s.rdb.TxPipeline()
	pipe.HSet(ctx, s.key, "state", stateDone, "outcome", outcome, "error_code", code, "text", "")
	pipe.Expire(ctx, s.key, s.w.cfg.RecordTTL)
	pipe.ZRem(ctx, s.w.inflightKey(), s.key)
	if _, err := pipe.Exec(ctx); err != nil {
		return redisErr("finish reply progress", err)
	}
	return nil
}

// heartbeat pushes the janitor's deadline for this reply forward.
func (s *record) heartbeat(ctx context.Context) error {
	deadline := time.Now().Add(s.w.cfg.OrphanAfter)
	if err := s.rdb.ZAdd(ctx, s.w.inflightKey(), redis.Z{Score: float64(deadline.UnixMilli()), Member: s.key}).Err(); err != nil {
		return redisErr("reply heartbeat", err)
	}
	return nil
}

// lockTTL bounds how long a crashed holder blocks the next delivery.
const lockTTL = 45 * time.Second

var errLocked = errors.New("another delivery of this reply is running")

// lock takes the reply's lock: only one delivery writes at a time.
func (s *record) lock(ctx context.Context) (string, error) {
	token := strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.Itoa(int(randUint32()))
	ok, err := s.rdb.SetNX(ctx, s.key+":lock", token, lockTTL).Result()
	if err != nil {
		return "", redisErr("lock reply", err)
	}
	if !ok {
		return "", errLocked
	}
	return token, nil
}

var unlockScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
var extendScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`)

func (s *record) unlock(ctx context.Context, token string) {
	_ = unlockScript.Run(ctx, s.rdb, []string{s.key + ":lock"}, token).Err()
}

// extend keeps the lock; false means it was lost (expired and taken).
func (s *record) extend(ctx context.Context, token string) (bool, error) {
	n, err := extendScript.Run(ctx, s.rdb, []string{s.key + ":lock"}, token, lockTTL.Milliseconds()).Int()
	if err != nil {
		return true, redisErr("extend reply lock", err)
	}
	return n == 1, nil
}

func redisErr(what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return &konstruct.Error{Code: konstruct.EUNAVAILABLE, Message: "Redis is unavailable.", Err: fmt.Errorf("%s: %w", what, err)}
}

func randUint32() uint32 { return rand.Uint32() }

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
