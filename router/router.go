package router

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/tracing"
	"github.com/konstruct/konstruct/internal/wait"
	"github.com/konstruct/konstruct/metrics"
)

// Outcome is what the router decided for one message; it is also the label
// of the route metric.
type Outcome string

const (
	Enqueued         Outcome = "enqueued"
	Duplicate        Outcome = "duplicate"         // a retry, a twin, or another daemon took it
	Bot              Outcome = "bot"               // bot_id, bot_message, or the bot's own user
	Edit             Outcome = "edit"              // message_changed
	Delete           Outcome = "delete"            // message_deleted
	Join             Outcome = "join"              // channel/group joins and leaves
	IgnoredSubtype   Outcome = "ignored_subtype"   // any other subtype (topic, pins, …)
	Invalid          Outcome = "invalid"           // no user, channel or ts
	NotAddressed     Outcome = "not_addressed"     // no mention, not a DM, thread not engaged
	UnknownWorkspace Outcome = "unknown_workspace" // team not (or no longer) installed
	RateLimited      Outcome = "rate_limited"
)

// TenantResolver finds the workspace (with its tenant) of a Slack team;
// unknown teams are konstruct ENOTFOUND errors.
type TenantResolver interface {
	TenantForTeam(ctx context.Context, teamID string) (konstruct.Workspace, error)
}

// Slack is the Slack the router uses (*bot.Web).
type Slack interface {
	Post(ctx context.Context, teamID, channelID, threadTS string, c konstruct.Content) (string, error)
	PostEphemeral(ctx context.Context, teamID, channelID, userID, threadTS, text string) error
	Delete(ctx context.Context, teamID, channelID, ts string) error
	// Replies reads a thread: a record routed again looks there for the
	// placeholder an interrupted routing may have posted.
	Replies(ctx context.Context, teamID, channelID, threadTS string) ([]konstruct.ThreadMessage, error)
}

// Intake is the durable record of the envelopes the gateway acked
// (*queue.Queue): the router reads records as one consumer of a group, and
// finishes each once its outcome is durable; records another consumer left
// unfinished are taken over after a lease.
type Intake interface {
	// ReadIntake returns up to n records: with after "", new ones, waiting
	// up to block for some; else those this consumer took earlier and did
	// not finish (a restart), with ids after `after` ("0" for the first).
	ReadIntake(ctx context.Context, consumer string, n int, block time.Duration, after string) ([]konstruct.Record, error)
	ReclaimIntake(ctx context.Context, consumer string, minIdle time.Duration, n int) ([]konstruct.Record, error)
	DoneIntake(ctx context.Context, ids ...string) error
	// HandBackIntake gives back, at a stop, records taken and not
	// finished: another process takes them at once, not after the lease.
	HandBackIntake(ctx context.Context, consumer string, ids ...string) error
}

// Claims marks messages as taken (*queue.Queue): dup is true when a Slack
// retry, the twin event of the post or another daemon took it first. An
// owner (the record) claiming again is not its own duplicate.
type Claims interface {
	Claim(ctx context.Context, post konstruct.Post, eventID, owner string) (dup bool, err error)
}

// Threads tells whether the bot is engaged in a thread (*queue.Queue).
type Threads interface {
	Engaged(ctx context.Context, tenantID, channelID, threadTS string) (bool, error)
}

// Limiter is the rate limit per person per channel and per tenant per
// channel (*queue.Queue).
type Limiter interface {
	Allow(ctx context.Context, tenantID, channelID, userID string) (konstruct.RateLimit, error)
}

// Replies is the durable state of replies (*queue.Queue): the router
// starts a reply's state before it posts the placeholder, so that routing
// the record again reuses the placeholder and the janitor can finish it.
type Replies interface {
	// BeginReply records st (stage queued) unless the post's reply has a
	// state already, and returns the state that holds.
	BeginReply(ctx context.Context, st konstruct.ReplyState) (konstruct.ReplyState, error)
	// ClaimPlaceholder records ts unless a placeholder is recorded, and
	// returns the one that holds.
	ClaimPlaceholder(ctx context.Context, post konstruct.Post, ts string) (string, error)
}

// Budgets are the Slack write budgets every process shares (*queue.Queue):
// the placeholder waits for its share of chat.postMessage's (per channel),
// and a 429 pauses the method everywhere.
type Budgets interface {
	TakeSlack(ctx context.Context, teamID, channelID, method string, p konstruct.Priority) (time.Duration, error)
	PauseSlack(ctx context.Context, teamID, method string, d time.Duration) error
}

// Enqueuer hands a reply job to the workers (*queue.Queue); a second job
// for the same post is an ECONFLICT error. EstimateWait says how long a new
// job of the tenant would wait for a worker, for the placeholder to say so.
type Enqueuer interface {
	Enqueue(ctx context.Context, job konstruct.ReplyJob) error
	EstimateWait(ctx context.Context, tenantID string) (time.Duration, error)
}

// Config configures a Router. Zero values take the defaults noted.
type Config struct {
	// Consumer names this process among the intake's readers (default
	// "router-<hostname>-<pid>"). A restarted process of the same name
	// finishes what it had taken first.
	Consumer string
	// Lease is how long a record may stay unfinished with its consumer
	// before another process takes it over (default 30 s).
	Lease time.Duration
	// TenantTTL is how long a team → tenant answer is cached (default 5 s;
	// InvalidateTenants drops the cache at once). While Postgres fails, the
	// last answer is served.
	TenantTTL time.Duration
	// Workers is how many records Run routes at once (default 64): routing
	// is mostly waiting on Redis and Slack.
	Workers int
	// RetryMax bounds the backoff between the attempts of a record that
	// hit a transient error (default 5 s; it starts at 100 ms).
	RetryMax time.Duration
	// QueuedAfter is the estimated wait from which the placeholder says
	// "Queued — about N s" instead of "Thinking..." (default 10 s).
	QueuedAfter time.Duration
	// PlaceholderWait bounds how long a placeholder waits for its budget
	// (or a 429's Retry-After) before the message is queued without one
	// (default 10 s; the worker posts it then).
	PlaceholderWait time.Duration
	// DrainTimeout bounds, once Run's context ended, the routing of the
	// records already taken (default 5 s); the rest stays in the intake
	// for another process, or this one after a restart.
	DrainTimeout time.Duration
	// Now is the clock of the UTC days and months of budgets and notes
	// and of the tenant cache's TTL (default time.Now; tests move it).
	Now     func() time.Time
	Logger  *slog.Logger
	Metrics *metrics.Metrics
	// Tracer continues the trace of each record it routes (nil: tracing
	// off); the reply job carries the route's span on to the worker.
	Tracer trace.Tracer
}

// Deps are the router's collaborators; all are required.
type Deps struct {
	Intake   Intake
	Tenants  TenantResolver
	Slack    Slack
	Claims   Claims
	Threads  Threads
	Limiter  Limiter
	Replies  Replies
	Enqueuer Enqueuer
	Budgets  Budgets
	// The tenant's policy and budgets (policy.go), and the clicks on the
	// bot's buttons.
	Policies Policies
	Usage    Usage
	Notes    Notes
	Records  Records
	Feedback Feedback
	Stops    Stops
}

// Router decides, for each recorded message, whether and how the AI
// employee answers: tenant, filters, the tenant's policy, engaged threads,
// dedupe, rate limit, budget, placeholder, enqueue. It also routes the
// clicks on the bot's buttons (policy.go).
type Router struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	tenants *tenantCache

	unknownMu sync.Mutex
	unknown   map[string]time.Time // team → last "unknown workspace" log

	logMu   sync.Mutex
	lastLog time.Time
}

// New returns a Router. Missing dependencies are a programming error and panic.
func New(cfg Config, deps Deps) *Router {
	if deps.Intake == nil || deps.Tenants == nil || deps.Slack == nil || deps.Claims == nil ||
		deps.Threads == nil || deps.Limiter == nil || deps.Replies == nil || deps.Enqueuer == nil || deps.Budgets == nil ||
		deps.Policies == nil || deps.Usage == nil || deps.Notes == nil || deps.Records == nil || deps.Feedback == nil || deps.Stops == nil {
		panic("router: every dependency is required")
	}
	if cfg.Consumer == "" {
		host, _ := os.Hostname()
		cfg.Consumer = "router-" + cmp.Or(host, "host") + "-" + strconv.Itoa(os.Getpid())
	}
	cfg.Lease = cmp.Or(cfg.Lease, 30*time.Second)
	cfg.TenantTTL = cmp.Or(cfg.TenantTTL, 5*time.Second)
	cfg.Workers = cmp.Or(cfg.Workers, 64)
	cfg.RetryMax = cmp.Or(cfg.RetryMax, 5*time.Second)
	cfg.DrainTimeout = cmp.Or(cfg.DrainTimeout, 5*time.Second)
	cfg.PlaceholderWait = cmp.Or(cfg.PlaceholderWait, 10*time.Second)
	cfg.QueuedAfter = cmp.Or(cfg.QueuedAfter, 10*time.Second)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Router{
		cfg:     cfg,
		deps:    deps,
		log:     log.With("component", "router"),
		tenants: newTenantCache(deps.Tenants, cfg.TenantTTL, cfg.Now, log),
		unknown: map[string]time.Time{},
	}
}

// InvalidateTenants forgets every cached team → tenant answer (call it when
// workspaces change).
func (r *Router) InvalidateTenants() { r.tenants.invalidate() }

// Route decides what to do with one message and does it, idempotently:
// routing the same record again (after a crash, or a transient error)
// reuses its claim, reply state and placeholder. An error means the outcome
// is not durable yet: the record must be routed again.
func (r *Router) Route(ctx context.Context, rec konstruct.Record) (out Outcome, err error) {
	start := time.Now()
	defer func() {
		if err == nil {
			r.cfg.Metrics.Route(string(out), time.Since(start))
		}
	}()
	msg := rec.Message

	// Decisions from the message alone first: no I/O for the noise.
	if o, skip := Prefilter(msg); skip {
		return o, nil
	}

	ws, err := r.tenants.get(ctx, msg.TeamID)
	switch {
	case konstruct.ErrorCode(err) == konstruct.ENOTFOUND:
		r.logUnknown(msg)
		return UnknownWorkspace, nil
	case err != nil:
		return "", fmt.Errorf("resolve tenant: %w", err)
	}
	if msg.Action != nil {
		return r.routeAction(ctx, msg, ws)
	}
	if ws.BotUserID != "" && msg.User == ws.BotUserID {
		return Bot, nil
	}
	msg.TenantID = ws.TenantID
	msg.BotUserID = cmp.Or(ws.BotUserID, msg.BotUserID)

	// The tenant's policy: outside it, nothing happens in the channel (a
	// DM gets one short note a day). Decided before anything is claimed.
	pol, err := r.deps.Policies.Policy(ctx, ws.TenantID)
	if err != nil {
		return "", fmt.Errorf("tenant policy: %w", err)
	}
	if out, ok, err := r.admits(ctx, msg, pol); !ok || err != nil {
		return out, err
	}

	// Addressed to us? Decided before anything is claimed, so a twin that is
	// not for us (the message event of a top-level mention) never marks the
	// post as seen. A thread is followed without a mention only under
	// the policy's auto-follow.
	if !msg.IsDM && !msg.IsMention {
		if pol.Follow != konstruct.FollowAuto {
			return NotAddressed, nil
		}
		engaged, err := r.deps.Threads.Engaged(ctx, ws.TenantID, msg.ChannelID, msg.ThreadTS)
		if err != nil {
			return "", err
		}
		if !engaged {
			return NotAddressed, nil
		}
	}

	if dup, err := r.deps.Claims.Claim(ctx, msg.Post(), msg.EventID, rec.ID); err != nil {
		return "", err
	} else if dup {
		return Duplicate, nil
	}

	lim, err := r.deps.Limiter.Allow(ctx, ws.TenantID, msg.ChannelID, msg.User)
	if err != nil {
		return "", err
	}
	if !lim.OK {
		if err := r.refuse(ctx, msg, konstruct.ERATELIMIT); err != nil {
			return "", err
		}
		if !lim.Notify {
			return RateLimited, nil // told once already in this window
		}
		return RateLimited, r.tellRateLimited(ctx, msg, lim.RetryAfter)
	}

	// The budget is checked when a question is admitted: an answer under
	// way (or queued) when the budget runs out is finished, and the next
	// question gets the line.
	now := r.cfg.Now()
	if period, err := r.spent(ctx, pol, now); err != nil {
		return "", err
	} else if period != "" {
		if err := r.refuse(ctx, msg, "budget"); err != nil {
			return "", err
		}
		return BudgetExhausted, r.noteOnce(ctx, msg, noteBudget, BudgetText(period, now))
	}

	alone := pol.Follow == konstruct.FollowOff && !msg.IsDM
	if r.cfg.Tracer != nil {
		// The reply continues the trace under the route's span, also when
		// the janitor takes it over from the job recorded in its state.
		if tp := tracing.Inject(ctx); tp != "" {
			msg.TraceParent = tp
		}
	}
	st, err := r.deps.Replies.BeginReply(ctx, konstruct.ReplyState{
		Post: msg.Post(), ThreadTS: msg.ReplyThreadTS(), EventID: msg.EventID, Stage: konstruct.StageQueued,
		Job: &konstruct.ReplyJob{Message: msg, EnqueuedAt: time.Now(), Alone: alone},
	})
	if err != nil {
		return "", err
	}
	if st.Stage == konstruct.StageDone {
		return Duplicate, nil // answered already: the claims were lost, the reply was not
	}
	placeholder, err := r.placeholder(ctx, rec, msg, st)
	if err != nil {
		return "", err
	}
	err = r.deps.Enqueuer.Enqueue(ctx, konstruct.ReplyJob{Message: msg, PlaceholderTS: placeholder, EnqueuedAt: time.Now(), Alone: alone})
	switch {
	case konstruct.ErrorCode(err) == konstruct.ECONFLICT:
		// Another routing of this post (an earlier run of this record, or
		// another daemon) queued it; the placeholder is the reply's own.
		return Duplicate, nil
	case err != nil:
		return "", fmt.Errorf("enqueue reply: %w", err)
	}
	r.cfg.Metrics.TaskEnqueued()
	return Enqueued, nil
}

// placeholder makes sure the reply has its placeholder, recorded in its
// state: the recorded one; for a record routed again, the one an
// interrupted routing posted but did not record; else a new one. Slack
// refusing it is no reason to hold the answer back: the worker posts one.
func (r *Router) placeholder(ctx context.Context, rec konstruct.Record, msg konstruct.Message, st konstruct.ReplyState) (string, error) {
	if st.PlaceholderTS != "" {
		return st.PlaceholderTS, nil
	}
	ts := ""
	if rec.Redelivered {
		ts = r.findPlaceholder(ctx, msg)
	}
	posted := false
	if ts == "" {
		var err error
		if ts, err = r.postPlaceholder(ctx, msg); err != nil {
			r.log.Warn("placeholder not posted; the worker posts one", "error", err, "team_id", msg.TeamID)
			return "", nil
		}
		posted = true
	}
	held, err := r.deps.Replies.ClaimPlaceholder(ctx, msg.Post(), ts)
	if err != nil {
		if posted {
			r.deleteQuietly(ctx, msg, ts) // routed again, this record posts anew
		}
		return "", err
	}
	if held != ts && posted {
		r.deleteQuietly(ctx, msg, ts) // a concurrent routing recorded its own first
	}
	return held, nil
}

// postPlaceholder posts the placeholder within its share of the channel's
// chat.postMessage budget, waiting for it (and for a 429's Retry-After,
// which pauses the method in every process) up to PlaceholderWait. When the
// answer will wait for a worker, the placeholder says about how long.
func (r *Router) postPlaceholder(ctx context.Context, msg konstruct.Message) (string, error) {
	const method = "chat.postMessage"
	text := konstruct.TextThinking
	if est, err := r.deps.Enqueuer.EstimateWait(ctx, msg.TenantID); err == nil && est >= r.cfg.QueuedAfter {
		text = konstruct.TextQueued(est)
	}
	deadline := time.Now().Add(r.cfg.PlaceholderWait)
	for {
		d, err := r.deps.Budgets.TakeSlack(ctx, msg.TeamID, msg.ChannelID, method, konstruct.PriorityPlaceholder)
		if err != nil {
			return "", err
		}
		if d == 0 {
			ts, err := r.deps.Slack.Post(ctx, msg.TeamID, msg.ChannelID, msg.ReplyThreadTS(), konstruct.Content{Text: text})
			ra, limited := konstruct.RetryAfter(err)
			if !limited {
				return ts, err
			}
			if perr := r.deps.Budgets.PauseSlack(ctx, msg.TeamID, method, ra); perr != nil {
				return "", perr
			}
			d = ra
		}
		if time.Now().Add(d).After(deadline) {
			return "", fmt.Errorf("placeholder: %s's budget is spent for %v", method, d.Round(time.Millisecond))
		}
		if !wait.Sleep(ctx, d) {
			return "", ctx.Err()
		}
	}
}

// findPlaceholder looks in the thread for a placeholder of ours posted
// after the message (an earlier routing of the record that stopped before
// recording it).
func (r *Router) findPlaceholder(ctx context.Context, msg konstruct.Message) string {
	msgs, err := r.deps.Slack.Replies(ctx, msg.TeamID, msg.ChannelID, msg.ReplyThreadTS())
	if err != nil {
		return ""
	}
	for _, m := range msgs {
		if m.BotID != "" && (msg.BotUserID == "" || m.User == msg.BotUserID) && konstruct.TSBefore(msg.TS, m.TS) && konstruct.IsPlaceholder(m.Text) {
			return m.TS
		}
	}
	return ""
}

func (r *Router) deleteQuietly(ctx context.Context, msg konstruct.Message, ts string) {
	if err := r.deps.Slack.Delete(ctx, msg.TeamID, msg.ChannelID, ts); err != nil {
		r.log.Warn("delete extra placeholder", "error", err, "team_id", msg.TeamID)
	}
}

// Prefilter drops what needs no lookup to drop: what the payload alone
// shows is not for the bot (subtypes it ignores, bot posts, its own posts,
// top-level channel messages that do not mention it). The gateway acks
// these without recording them; Route applies the same test first.
func Prefilter(msg konstruct.Message) (Outcome, bool) {
	if msg.Action != nil {
		if msg.User == "" || msg.ChannelID == "" || msg.TS == "" || msg.TeamID == "" {
			return Invalid, true
		}
		return "", false
	}
	switch msg.SubType {
	case "", "thread_broadcast", "file_share", "me_message":
	case "bot_message":
		return Bot, true
	case "message_changed":
		return Edit, true
	case "message_deleted":
		return Delete, true
	case "channel_join", "channel_leave", "group_join", "group_leave":
		return Join, true
	default:
		return IgnoredSubtype, true
	}
	if msg.BotID != "" || (msg.BotUserID != "" && msg.User == msg.BotUserID) {
		return Bot, true
	}
	if msg.User == "" || msg.ChannelID == "" || msg.TS == "" || msg.TeamID == "" {
		return Invalid, true
	}
	if !msg.IsDM && !msg.IsMention && !msg.InThread() {
		return NotAddressed, true
	}
	return "", false
}

// RateLimitText is the ephemeral an over-limit user sees.
func RateLimitText(wait time.Duration) string {
	n := max(1, int(math.Ceil(wait.Seconds())))
	unit := "seconds"
	if n == 1 {
		unit = "second"
	}
	return fmt.Sprintf("I'm receiving too many requests right now — please try again in %d %s.", n, unit)
}

// tellRateLimited sends the over-limit ephemeral: in the thread when the
// message is in one, else in the channel, where the user is looking (an
// ephemeral in the thread of a reply-less post is easy to miss).
func (r *Router) tellRateLimited(ctx context.Context, msg konstruct.Message, wait time.Duration) error {
	threadTS := ""
	if msg.InThread() {
		threadTS = msg.ThreadTS
	}
	if err := r.deps.Slack.PostEphemeral(ctx, msg.TeamID, msg.ChannelID, msg.User, threadTS, RateLimitText(wait)); err != nil {
		return fmt.Errorf("rate limit notice: %w", err)
	}
	return nil
}

// logUnknown logs an event from an unknown workspace once per team per hour.
func (r *Router) logUnknown(msg konstruct.Message) {
	r.unknownMu.Lock()
	last, seen := r.unknown[msg.TeamID]
	now := time.Now()
	if seen && now.Sub(last) < time.Hour {
		r.unknownMu.Unlock()
		return
	}
	if len(r.unknown) >= 10000 {
		clear(r.unknown)
	}
	r.unknown[msg.TeamID] = now
	r.unknownMu.Unlock()
	r.log.Warn("event from an unknown workspace ignored", "team_id", msg.TeamID, "api_app_id", msg.APIAppID, "enterprise_id", msg.EnterpriseID)
}

// retryDelay is the wait before the attempt after n failures: 100 ms
// doubling to RetryMax.
func (r *Router) retryDelay(n int) time.Duration {
	return min(100*time.Millisecond<<min(n, 10), r.cfg.RetryMax)
}
