// Package worker is the back half of the reply flow. Run serves the reply
// tasks the router queued: for each, a reply (reply.go) loads the tenant's
// agent, builds the persona prompt and the thread's history (prompt.go),
// streams the LLM's answer into the placeholder the router posted
// (stream.go), and leaves every placeholder as an answer or a short, human
// error, exactly once as a person sees it (slack.go holds the Slack write
// discipline). A janitor (janitor.go) finishes the replies of crashed
// processes.
//
// Exactly once rests on the reply's durable state (konstruct.ReplyState:
// stage, placeholder, streamed message, follow-ups, the final text once
// generated) and a lease, so that two deliveries of one task never write
// at once and a retry resumes in the same messages. Both live in Redis
// behind the States interface, which *queue.Queue implements; the worker
// itself imports neither Redis nor Slack.
package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/konstruct/konstruct"
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
	// Concurrency is how many replies are generated at once (default 20).
	Concurrency int
	// TenantConcurrency, when set, caps the replies one tenant generates at
	// once in this process (a task over the cap goes back to the queue for a
	// moment, uncounted). 0, the default, sets no fixed cap: the queue
	// admits each busy tenant's share of the workers, relative to the
	// tenants busy right now (queue/fair.go).
	TenantConcurrency int
	// Streaming is StreamingUpdate (default) or StreamingNative.
	Streaming string
	// HistoryTokens bounds the thread context sent to the model (default 6000).
	HistoryTokens int
	// MaxAnswerTokens caps the answer the model may write (default 4,096):
	// a looping model must not flood a thread until the total timeout.
	MaxAnswerTokens int
	// MaxAnswerMessages caps the Slack messages one answer takes (default
	// 5): past MaxAnswerMessages × PartChars characters the answer is cut,
	// with a visible note, whatever the server does with the token cap.
	MaxAnswerMessages int

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
	// JanitorInterval is how often the janitor sweeps (default 15s).
	JanitorInterval time.Duration
	// OrphanGrace is how long a reply with no task may wait for the router
	// to queue it before the janitor finishes it (default 2m: the router
	// routes a record again within its lease, 30 s).
	OrphanGrace time.Duration
	// AgentCacheTTL is how long an agent stays cached (default 30s).
	AgentCacheTTL time.Duration
	// StopPoll is how often a streaming answer looks whether its asker
	// pressed Stop, and counts its tokens so far (default 500 ms).
	StopPoll time.Duration

	Logger *slog.Logger
	// Metrics may be nil.
	Metrics *metrics.Metrics
	// Now is the janitor's clock and the one of the UTC days and months of
	// token budgets (default time.Now; tests move it).
	Now func() time.Time
	// Tracer continues each job's trace (nil: tracing off): the reply, its
	// LLM request; Slack's calls are traced by the Slack given in Deps.
	Tracer trace.Tracer
}

// Defaults of the worker.* settings.
const (
	DefaultConcurrency       = 20
	DefaultHistoryTokens     = 6000
	DefaultMaxAnswerTokens   = 4096
	DefaultMaxAnswerMessages = 5
)

// Validate reports every problem with c, as *konstruct.FieldError values.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &konstruct.FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	switch c.Streaming {
	case "", StreamingUpdate, StreamingNative:
	default:
		bad("streaming", "must be %q or %q, got %q", StreamingUpdate, StreamingNative, c.Streaming)
	}
	if c.Concurrency < 0 {
		bad("concurrency", "must be at least 1, got %d", c.Concurrency)
	}
	if c.TenantConcurrency < 0 {
		bad("tenant_concurrency", "must not be negative (0 = each busy tenant's fair share), got %d", c.TenantConcurrency)
	}
	if c.HistoryTokens < 0 {
		bad("history_tokens", "must not be negative")
	}
	if c.MaxAnswerTokens < 0 {
		bad("max_answer_tokens", "must not be negative")
	}
	if c.MaxAnswerMessages < 0 || c.MaxAnswerMessages > 50 {
		bad("max_answer_messages", "must be between 1 and 50, got %d", c.MaxAnswerMessages)
	}
	if c.PartChars != 0 && (c.PartChars < 200 || c.PartChars > 12000) {
		bad("part_chars", "must be between 200 and 12000, got %d", c.PartChars)
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	c.Concurrency = cmp.Or(c.Concurrency, DefaultConcurrency)
	c.Streaming = cmp.Or(c.Streaming, StreamingUpdate)
	c.HistoryTokens = cmp.Or(c.HistoryTokens, DefaultHistoryTokens)
	c.MaxAnswerTokens = cmp.Or(c.MaxAnswerTokens, DefaultMaxAnswerTokens)
	c.MaxAnswerMessages = cmp.Or(c.MaxAnswerMessages, DefaultMaxAnswerMessages)
	c.EditInterval = cmp.Or(c.EditInterval, time.Second)
	c.PartChars = cmp.Or(c.PartChars, 11000)
	c.FinalizeTimeout = cmp.Or(c.FinalizeTimeout, 2*time.Minute)
	c.MaxAge = cmp.Or(c.MaxAge, 10*time.Minute)
	c.JanitorInterval = cmp.Or(c.JanitorInterval, 15*time.Second)
	c.OrphanGrace = cmp.Or(c.OrphanGrace, 2*time.Minute)
	c.AgentCacheTTL = cmp.Or(c.AgentCacheTTL, 30*time.Second)
	c.StopPoll = cmp.Or(c.StopPoll, 500*time.Millisecond)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// AgentSource gives a tenant's active agent (ENOTFOUND when it has none).
// *store.Store satisfies it, reading in an RLS-scoped transaction.
type AgentSource interface {
	ActiveAgent(ctx context.Context, tenantID string) (konstruct.Agent, error)
}

// Records writes the record of a reply, upserting on tenant + event
// (*store.Store).
type Records interface {
	RecordReply(ctx context.Context, r konstruct.Reply) error
}

// Slack is what a worker does in Slack (*bot.Web).
type Slack interface {
	Post(ctx context.Context, teamID, channelID, threadTS string, c konstruct.Content) (string, error)
	Update(ctx context.Context, teamID, channelID, ts string, c konstruct.Content) error
	Delete(ctx context.Context, teamID, channelID, ts string) error
	// Replies reads a thread with readable text and authors.
	Replies(ctx context.Context, teamID, channelID, threadTS string) ([]konstruct.ThreadMessage, error)
	// Readable turns a message's markup into what a reader sees.
	Readable(ctx context.Context, teamID, text string) string
	UserName(ctx context.Context, teamID, userID string) string
	StartStream(ctx context.Context, teamID, channelID, threadTS, recipientUser, markdown string) (string, error)
	AppendStream(ctx context.Context, teamID, channelID, ts, markdown string) error
	StopStream(ctx context.Context, teamID, channelID, ts, markdown string) error
}

// LLM streams a chat completion (*llm.Client).
type LLM interface {
	Stream(ctx context.Context, req llm.Request, onDelta func(delta string) error) (llm.Result, error)
}

// Tasks serves the queued reply tasks (*queue.Queue): it runs h for each,
// concurrency at a time, until ctx ends, then finishes or hands back what
// runs and returns.
type Tasks interface {
	Serve(ctx context.Context, concurrency int, h func(context.Context, konstruct.ReplyJob, konstruct.Delivery) error) error
}

// States keeps the durable state of replies (*queue.Queue).
type States interface {
	// AcquireReply takes the reply's lease; ECONFLICT when another
	// delivery holds it. lost is called if the lease is lost while held.
	AcquireReply(ctx context.Context, post konstruct.Post, lost func()) (konstruct.Lease, error)
	LoadReply(ctx context.Context, post konstruct.Post) (konstruct.ReplyState, bool, error)
	// SaveReply writes the whole state; StageDone takes the reply out of
	// the janitor's index.
	SaveReply(ctx context.Context, st konstruct.ReplyState) error
	// ClaimPlaceholder records ts unless a placeholder is recorded, and
	// returns the one that holds.
	ClaimPlaceholder(ctx context.Context, post konstruct.Post, ts string) (string, error)
	// EngageFor marks a thread engaged after an answer, for ttl (0: the
	// install's threads.engaged_ttl).
	EngageFor(ctx context.Context, tenantID, channelID, threadTS string, ttl time.Duration) error
	// DueReplies, ClaimDue and Reschedule are the janitor's index of
	// replies whose process stopped sending heartbeats.
	DueReplies(ctx context.Context, n int) ([]konstruct.Post, error)
	ClaimDue(ctx context.Context, post konstruct.Post) (bool, error)
	Reschedule(ctx context.Context, post konstruct.Post, at time.Time) error
	// ObserveReply folds a reply's duration into the average the router's
	// "Queued — about N s" estimate uses.
	ObserveReply(ctx context.Context, d time.Duration)
	// TaskState is where the post's reply task stands in the queue
	// ("pending", "active", "scheduled", "retry", "archived",
	// "completed"; "" when there is none).
	TaskState(ctx context.Context, post konstruct.Post) (string, error)
}

// Budgets are the Slack write budgets every process of the install shares
// (*queue.Queue): per workspace and method (per channel for
// chat.postMessage), with priorities, and paused by a 429 everywhere.
type Budgets interface {
	// TakeSlack takes one write now (0) or says how long it would wait.
	TakeSlack(ctx context.Context, teamID, channelID, method string, p konstruct.Priority) (time.Duration, error)
	// PauseSlack holds a method back in every process for Slack's Retry-After.
	PauseSlack(ctx context.Context, teamID, method string, d time.Duration) error
}

// Policies gives a tenant's policy (*store.PolicyCache): how it follows
// threads, and its token budgets.
type Policies interface {
	Policy(ctx context.Context, tenantID string) (konstruct.Policy, error)
}

// Usage counts the LLM tokens each tenant spends per UTC day and month
// (*queue.Queue), against its budgets.
type Usage interface {
	AddTokens(ctx context.Context, tenantID string, at time.Time, n int64) (day, month int64, err error)
}

// Stops tells whether the asker of a post pressed Stop on its answer, in
// any process (*queue.Queue).
type Stops interface {
	ReplyStopped(ctx context.Context, post konstruct.Post) (bool, error)
}

// Deps are the services a Server uses; all are required.
type Deps struct {
	Agents   AgentSource
	Records  Records
	Slack    Slack
	LLM      LLM
	Tasks    Tasks
	States   States
	Budgets  Budgets
	Policies Policies
	Usage    Usage
	Stops    Stops
}

// Server generates replies. Run serves the queue; Handle answers one job.
type Server struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	agents   *agentCache
	tenants  tenantSlots
	takeover *semaphore.Weighted // the janitor's takeovers running at once
}

// New returns a Server. cfg is expected to be valid (Validate); missing
// dependencies are a programming error and panic.
func New(cfg Config, deps Deps) *Server {
	if deps.Agents == nil || deps.Records == nil || deps.Slack == nil || deps.LLM == nil || deps.Tasks == nil || deps.States == nil || deps.Budgets == nil ||
		deps.Policies == nil || deps.Usage == nil || deps.Stops == nil {
		panic("worker: every dependency is required")
	}
	cfg = cfg.withDefaults()
	return &Server{
		cfg:      cfg,
		deps:     deps,
		log:      cfg.Logger.With(slog.String("component", "worker")),
		agents:   newAgentCache(deps.Agents, cfg.AgentCacheTTL),
		takeover: semaphore.NewWeighted(int64(max(1, cfg.Concurrency/4))),
	}
}

// Run serves the reply tasks and runs the janitor until ctx ends; then it
// stops taking tasks, lets in-flight replies finish or hands them back to
// the queue (their state lets the next delivery resume in the same
// placeholder), and returns.
func (w *Server) Run(ctx context.Context) error {
	var g errgroup.Group
	g.Go(func() error { return w.deps.Tasks.Serve(ctx, w.cfg.Concurrency, w.processTask) })
	g.Go(func() error { w.runJanitor(ctx); return nil })
	return g.Wait()
}

func (w *Server) processTask(ctx context.Context, job konstruct.ReplyJob, d konstruct.Delivery) error {
	tenant := job.Message.TenantID
	if w.cfg.TenantConcurrency > 0 && !w.tenants.acquire(tenant, w.cfg.TenantConcurrency) {
		w.cfg.Metrics.Deferred()
		return &konstruct.DeferError{After: 500 * time.Millisecond, Reason: "tenant at its share of the workers"}
	}
	if w.cfg.TenantConcurrency > 0 {
		defer w.tenants.release(tenant)
	}
	return w.Handle(ctx, job, d)
}

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
