// Package worker is the back half of the reply flow: an asynq server whose
// reply:generate handler loads the tenant's agent, builds the persona prompt
// and the thread's history, streams the LLM's answer into the placeholder
// the router posted, and leaves every placeholder as an answer or a short,
// human error, exactly once as a person sees it.
//
// Exactly once rests on a progress record in Redis per reply (state,
// placeholder ts, follow-up ts list, the final text once generated), a lock
// so two deliveries of one task never write at once, and a heartbeat that
// lets the janitor tell a crashed reply from a slow one.
package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/bot"
	"github.com/konstruct/konstruct/llm"
	"github.com/konstruct/konstruct/metrics"
)

// Streaming modes.
const (
	StreamingUpdate = "update" // coalesced chat.update edits of the placeholder
	StreamingNative = "native" // chat.startStream / appendStream / stopStream
)

// Config configures a Server. Zero values take the defaults noted.
type Config struct {
	// RedisOpt is asynq's connection to Redis (needed by Start only).
	RedisOpt asynq.RedisConnOpt
	// Queue is the asynq queue to serve (default Prefix+"replies").
	Queue string
	// Concurrency is how many replies are generated at once (default 20).
	Concurrency int
	// Streaming is StreamingUpdate (default) or StreamingNative.
	Streaming string
	// HistoryTokens bounds the thread context sent to the model (default 6000).
	HistoryTokens int
	// MaxAnswerTokens caps the answer (0 leaves it to the server).
	MaxAnswerTokens int
	// ShutdownTimeout is how long Shutdown lets in-flight replies finish
	// before they go back to the queue (default 20s).
	ShutdownTimeout time.Duration
	// TaskCheckInterval is how often an idle worker polls the queue (default
	// 10ms). asynq's own default (1s, jittered to 0.5–1.5s) would add up to
	// 1.5s before a person sees the answer start; one tiny Lua call every
	// ~10ms per process is cheap by comparison.
	TaskCheckInterval time.Duration
	// TenantConcurrency caps the replies one tenant generates at once in
	// this process (default: half of Concurrency, at least 1), so that one
	// tenant's flood or slow model never takes every worker: a task over the
	// cap goes back to the queue for a second, uncounted, and the other
	// tenants' replies go first.
	TenantConcurrency int
	// Prefix is redis.prefix: the progress records live under it.
	Prefix string
	Logger *slog.Logger
	// Metrics may be nil.
	Metrics *metrics.Metrics

	// EditsPerMinute is the chat.update budget the replies streaming in one
	// workspace share in this process (default 40, under Slack's ~50/min
	// Tier 3 so that other writes keep room).
	EditsPerMinute float64
	// EditInterval is the least time between two edits of one message while
	// it streams (default 1s).
	EditInterval time.Duration
	// PartChars is the size of one message of the answer (default 11,000,
	// under the markdown block's 12,000 with a margin).
	PartChars int
	// FinalizeTimeout bounds delivering the final text (the last edit and
	// the follow-ups), rate-limit waits included (default 2m).
	FinalizeTimeout time.Duration
	// MaxAge: a task that fails transiently this long after it was enqueued
	// resolves its placeholder with an error instead of being retried
	// (default 10m).
	MaxAge time.Duration
	// OrphanAfter is how long a reply may go without a heartbeat before the
	// janitor resolves it (default 3m).
	OrphanAfter time.Duration
	// JanitorInterval is how often RunJanitor sweeps (default 30s).
	JanitorInterval time.Duration
	// AgentCacheTTL is how long an agent stays cached (default 30s).
	AgentCacheTTL time.Duration
	// RecordTTL is how long progress records are kept (default 48h).
	RecordTTL time.Duration
}

func (c Config) withDefaults() Config {
	c.Queue = cmp.Or(c.Queue, c.Prefix+"replies")
	c.Concurrency = cmp.Or(c.Concurrency, 20)
	c.Streaming = cmp.Or(c.Streaming, StreamingUpdate)
	c.HistoryTokens = cmp.Or(c.HistoryTokens, 6000)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, 20*time.Second)
	c.TaskCheckInterval = cmp.Or(c.TaskCheckInterval, 10*time.Millisecond)
	c.TenantConcurrency = cmp.Or(c.TenantConcurrency, max(1, c.Concurrency/2))
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.EditsPerMinute = cmp.Or(c.EditsPerMinute, 40)
	c.EditInterval = cmp.Or(c.EditInterval, time.Second)
	c.PartChars = cmp.Or(c.PartChars, 11000)
	c.FinalizeTimeout = cmp.Or(c.FinalizeTimeout, 2*time.Minute)
	c.MaxAge = cmp.Or(c.MaxAge, 10*time.Minute)
	c.OrphanAfter = cmp.Or(c.OrphanAfter, 3*time.Minute)
	c.JanitorInterval = cmp.Or(c.JanitorInterval, 30*time.Second)
	c.AgentCacheTTL = cmp.Or(c.AgentCacheTTL, 30*time.Second)
	c.RecordTTL = cmp.Or(c.RecordTTL, 48*time.Hour)
	return c
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch c.Streaming {
	case "", StreamingUpdate, StreamingNative:
	default:
		return fmt.Errorf("worker: streaming must be %q or %q, got %q", StreamingUpdate, StreamingNative, c.Streaming)
	}
	if c.Concurrency < 0 || c.HistoryTokens < 0 || c.MaxAnswerTokens < 0 {
		return errors.New("worker: concurrency, history_tokens and max_answer_tokens must not be negative")
	}
	if c.PartChars != 0 && (c.PartChars < 200 || c.PartChars > 12000) {
		return fmt.Errorf("worker: part size %d is outside 200..12000", c.PartChars)
	}
	return nil
}

// AgentSource gives a tenant's active agent (ENOTFOUND when it has none).
// *store.Store satisfies it, reading in an RLS-scoped transaction.
type AgentSource interface {
	ActiveAgent(ctx context.Context, tenantID string) (konstruct.Agent, error)
}

// ReplyRecorder writes the record of a reply, upserting on tenant + event.
type ReplyRecorder interface {
	RecordReply(ctx context.Context, r konstruct.Reply) error
}

// Slack is what a worker does in Slack; *bot.Web satisfies it.
type Slack interface {
	PostMessage(ctx context.Context, teamID, channelID, threadTS string, m bot.Msg) (string, error)
	Update(ctx context.Context, teamID, channelID, ts string, m bot.Msg) error
	Delete(ctx context.Context, teamID, channelID, ts string) error
	Replies(ctx context.Context, teamID, channelID, threadTS string) ([]bot.ThreadMessage, error)
	UserName(ctx context.Context, teamID, userID string) string
	StartStream(ctx context.Context, teamID, channelID, threadTS, recipientUser, markdown string) (string, error)
	AppendStream(ctx context.Context, teamID, channelID, ts, markdown string) error
	StopStream(ctx context.Context, teamID, channelID, ts, markdown string) error
}

// LLM streams a chat completion; *llm.Client satisfies it.
type LLM interface {
	Stream(ctx context.Context, req llm.Request, onDelta func(delta string) error) (llm.Result, error)
}

// Engager marks a thread engaged after an answer; *router.Threads satisfies it.
type Engager interface {
	Engage(ctx context.Context, tenantID, channelID, threadTS string) error
}

// Deps are the services a Server uses. Threads may be nil.
type Deps struct {
	Agents  AgentSource
	Replies ReplyRecorder
	Slack   Slack
	LLM     LLM
	Threads Engager
	Redis   redis.UniversalClient
}

// Server generates replies. Create it with New; Start serves the queue,
// Handle answers one job directly.
type Server struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	budgets *budgets
	agents  *agentCache

	mu       sync.Mutex
	srv      *asynq.Server
	started  bool
	inflight sync.WaitGroup
	tenants  tenantSlots
}

// New returns a Server. cfg is expected to be valid (config validates
// worker.* at load; see Validate); an unknown streaming mode falls back to
// StreamingUpdate. Missing dependencies are a programming error and panic.
func New(cfg Config, deps Deps) *Server {
	if deps.Agents == nil || deps.Replies == nil || deps.Slack == nil || deps.LLM == nil || deps.Redis == nil {
		panic("worker: Agents, Replies, Slack, LLM and Redis are required")
	}
	if cfg.Streaming != StreamingNative {
		cfg.Streaming = StreamingUpdate
	}
	cfg = cfg.withDefaults()
	w := &Server{cfg: cfg, deps: deps, log: cfg.Logger.With(slog.String("component", "worker"))}
	w.budgets = newBudgets(cfg.EditsPerMinute)
	w.agents = newAgentCache(deps.Agents, cfg.AgentCacheTTL)
	return w
}

// Start begins serving the reply queue on asynq's own goroutines and
// returns. It never traps signals: the caller's Shutdown ends it.
func (w *Server) Start() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		return errors.New("worker: already started")
	}
	if w.cfg.RedisOpt == nil {
		return errors.New("worker: no Redis connection for the queue")
	}
	srv := asynq.NewServer(w.cfg.RedisOpt, asynq.Config{
		Concurrency:       w.cfg.Concurrency,
		Queues:            map[string]int{w.cfg.Queue: 1},
		ShutdownTimeout:   w.cfg.ShutdownTimeout,
		TaskCheckInterval: w.cfg.TaskCheckInterval,
		// Tasks deferred for their tenant's share or a lock come back after
		// a second or so, not asynq's default of up to 5 s.
		DelayedTaskCheckInterval: time.Second,
		RetryDelayFunc:           retryDelay,
		// Another delivery holding the reply's lock, or the tenant at its
		// share of the workers, is not a failure: wait without using up the
		// task's retries.
		IsFailure: func(err error) bool { return !deferred(err) },
		Logger:    asynqLogger{w.log.With(slog.String("component", "asynq"))},
		LogLevel:  asynq.WarnLevel,
		ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
			if deferred(err) {
				return
			}
			n, _ := asynq.GetRetryCount(ctx)
			w.log.LogAttrs(ctx, slog.LevelWarn, "reply task failed", slog.String("error", err.Error()), slog.Int("retry", n))
		}),
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(konstruct.TaskReplyGenerate, w.processTask)
	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	w.srv, w.started = srv, true
	return nil
}

// Shutdown stops taking tasks, lets in-flight replies finish within
// ShutdownTimeout and hands the others back to the queue (their progress
// records let the next delivery resume in the same placeholder). It is safe
// to call more than once and without Start.
func (w *Server) Shutdown() {
	w.mu.Lock()
	srv := w.srv
	w.srv = nil
	w.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
	}
	// asynq cancels the context of the tasks it handed back but does not
	// wait for their handlers; wait here so nothing writes after Shutdown.
	done := make(chan struct{})
	go func() { w.inflight.Wait(); close(done) }()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		w.log.Warn("reply handlers still running after shutdown")
	}
}

// retryDelay retries soon: a reply nobody sees for minutes is worth little,
// and MaxAge ends the attempts. A reply locked by another delivery (or by a
// crashed process, until the lock expires) is looked at again a bit later.
func retryDelay(n int, err error, _ *asynq.Task) time.Duration {
	if errors.Is(err, errTenantBusy) {
		return 500 * time.Millisecond
	}
	if errors.Is(err, errLocked) {
		return lockTTL / 4
	}
	d := 2 * time.Second << min(n, 4)
	return min(d, 30*time.Second)
}

func (w *Server) processTask(ctx context.Context, t *asynq.Task) error {
	var job konstruct.ReplyJob
	if err := json.Unmarshal(t.Payload(), &job); err != nil {
		return fmt.Errorf("decode reply job: %w: %w", err, asynq.SkipRetry)
	}
	tenant := job.Message.TenantID
	if !w.tenants.acquire(tenant, w.cfg.TenantConcurrency) {
		w.cfg.Metrics.Deferred()
		return errTenantBusy
	}
	defer w.tenants.release(tenant)
	return w.Handle(ctx, job)
}

// errTenantBusy defers a task whose tenant already uses its share of this
// process's workers.
var errTenantBusy = errors.New("tenant at its share of the workers")

// deferred reports whether err only postpones the task.
func deferred(err error) bool { return errors.Is(err, errLocked) || errors.Is(err, errTenantBusy) }

// tenantSlots counts the replies each tenant is generating in this process.
type tenantSlots struct {
	mu     sync.Mutex
	active map[string]int
}

func (s *tenantSlots) acquire(tenant string, limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active == nil {
		s.active = map[string]int{}
	}
	if s.active[tenant] >= limit {
		return false
	}
	s.active[tenant]++
	return true
}

func (s *tenantSlots) release(tenant string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active[tenant]--; s.active[tenant] <= 0 {
		delete(s.active, tenant)
	}
}

// asynqLogger sends asynq's logs to slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)) }

// agentCache keeps each tenant's agent briefly: a reply burst in one tenant
// costs one query, and an edited persona shows within the TTL.
type agentCache struct {
	src AgentSource
	ttl time.Duration

	mu sync.Mutex
	m  map[string]cachedAgent
}

type cachedAgent struct {
	agent konstruct.Agent
	at    time.Time
}

func newAgentCache(src AgentSource, ttl time.Duration) *agentCache {
	return &agentCache{src: src, ttl: ttl, m: map[string]cachedAgent{}}
}

func (c *agentCache) get(ctx context.Context, tenantID string) (konstruct.Agent, error) {
	c.mu.Lock()
	e, ok := c.m[tenantID]
	c.mu.Unlock()
	if ok && time.Since(e.at) < c.ttl {
		return e.agent, nil
	}
	a, err := c.src.ActiveAgent(ctx, tenantID)
	if err != nil {
		return konstruct.Agent{}, err
	}
	if a.TenantID != "" && a.TenantID != tenantID {
		// Never answer with another tenant's persona, whatever the source says.
		return konstruct.Agent{}, konstruct.Errorf(konstruct.EINTERNAL, "agent of tenant %s returned for tenant %s", a.TenantID, tenantID)
	}
	c.mu.Lock()
	c.m[tenantID] = cachedAgent{agent: a, at: time.Now()}
	c.mu.Unlock()
	return a, nil
}
