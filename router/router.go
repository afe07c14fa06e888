package router

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/konstruct/konstruct"
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
	EnqueueFailed    Outcome = "enqueue_failed"
	TenantError      Outcome = "tenant_error" // the tenant could not be looked up
)

// TextEnqueueFailed is what a Slack user sees when their message could not
// be queued.
const TextEnqueueFailed = "Sorry — I couldn't queue your message right now. Please try again in a moment."

// TenantResolver finds the workspace (with its tenant) of a Slack team;
// unknown teams are konstruct ENOTFOUND errors.
type TenantResolver interface {
	TenantForTeam(ctx context.Context, teamID string) (konstruct.Workspace, error)
}

// Slack is the Slack writes the router makes (*bot.Web implements them).
type Slack interface {
	Post(ctx context.Context, teamID, channelID, threadTS string, c konstruct.Content) (string, error)
	Update(ctx context.Context, teamID, channelID, ts string, c konstruct.Content) error
	PostEphemeral(ctx context.Context, teamID, channelID, userID, threadTS, text string) error
	Delete(ctx context.Context, teamID, channelID, ts string) error
}

// Claims marks messages as taken (*queue.Queue): dup is true when a Slack
// retry, the twin event of the post or another daemon took it first. An
// owner claiming again is not its own duplicate ("" = no owner).
type Claims interface {
	Claim(ctx context.Context, post konstruct.Post, eventID, owner string) (dup bool, err error)
}

// Threads tells whether the bot is engaged in a thread (*queue.Queue).
type Threads interface {
	Engaged(ctx context.Context, tenantID, channelID, threadTS string) (bool, error)
}

// Limiter is the per tenant per channel rate limit (*queue.Queue): when a
// message is not allowed, retryAfter says when the next one will be.
type Limiter interface {
	Allow(ctx context.Context, tenantID, channelID string) (ok bool, retryAfter time.Duration, err error)
}

// Enqueuer hands a reply job to the workers (*queue.Queue); a second job
// for the same post is an ECONFLICT error.
type Enqueuer interface {
	Enqueue(ctx context.Context, job konstruct.ReplyJob) error
}

// Config configures a Router. Zero values take the defaults noted.
type Config struct {
	// EnqueueRetryFor bounds the retries of an enqueue while Redis is
	// unreachable (default 30 s); after it the placeholder says so.
	EnqueueRetryFor time.Duration
	// TenantTTL is how long a team → tenant answer is cached (default 5 s;
	// InvalidateTenants drops the cache at once).
	TenantTTL time.Duration
	// Workers is how many messages Run routes at once (default 64): routing is
	// mostly waiting on Redis and Slack, so many cheap goroutines keep up with
	// thousands of events per second.
	Workers int
	// DrainTimeout bounds the routing of what is still queued once Run's
	// context has ended (default 10 s).
	DrainTimeout time.Duration
	Logger       *slog.Logger
	Metrics      *metrics.Metrics
}

// Deps are the router's collaborators; all are required.
type Deps struct {
	// Events is the gateway's hand-off: Run routes what it carries until
	// it is closed.
	Events   <-chan konstruct.Message
	Tenants  TenantResolver
	Slack    Slack
	Claims   Claims
	Threads  Threads
	Limiter  Limiter
	Enqueuer Enqueuer
}

// Router decides, for each normalized message, whether and how the AI
// employee answers: tenant, filters, dedupe, engaged threads, rate limit,
// placeholder, enqueue.
type Router struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	tenants *tenantCache

	unknownMu sync.Mutex
	unknown   map[string]time.Time // team → last "unknown workspace" log
}

// New returns a Router. Missing dependencies are a programming error and panic.
func New(cfg Config, deps Deps) *Router {
	if deps.Events == nil || deps.Tenants == nil || deps.Slack == nil || deps.Claims == nil ||
		deps.Threads == nil || deps.Limiter == nil || deps.Enqueuer == nil {
		panic("router: every dependency is required")
	}
	cfg.EnqueueRetryFor = cmp.Or(cfg.EnqueueRetryFor, 30*time.Second)
	cfg.TenantTTL = cmp.Or(cfg.TenantTTL, 5*time.Second)
	cfg.Workers = cmp.Or(cfg.Workers, 64)
	cfg.DrainTimeout = cmp.Or(cfg.DrainTimeout, 10*time.Second)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Router{
		cfg:     cfg,
		deps:    deps,
		log:     log.With("component", "router"),
		tenants: newTenantCache(deps.Tenants, cfg.TenantTTL),
		unknown: map[string]time.Time{},
	}
}

// InvalidateTenants forgets every cached team → tenant answer (call it when
// workspaces change).
func (r *Router) InvalidateTenants() { r.tenants.invalidate() }

// Run routes the messages of Deps.Events with a small pool of goroutines
// until the channel is closed and everything in it was routed: the gateway
// closes it after its sockets stopped, so every acked message gets a
// decision. Once ctx ends, what is left is still routed, with DrainTimeout
// as a bound on retries.
func (r *Router) Run(ctx context.Context) error {
	events := r.deps.Events
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-finished:
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(r.cfg.DrainTimeout)
		defer t.Stop()
		select {
		case <-finished:
		case <-t.C:
			r.log.Warn("drain timeout: routing what is left without retries")
			cancel()
		}
	}()

	var wg sync.WaitGroup
	for range r.cfg.Workers {
		wg.Go(func() {
			for msg := range events {
				r.cfg.Metrics.QueueDepth(len(events))
				r.handle(rctx, msg)
			}
		})
	}
	wg.Wait()
	return nil
}

func (r *Router) handle(ctx context.Context, msg konstruct.Message) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.EnqueueRetryFor+30*time.Second)
	defer cancel()
	out, err := r.Route(ctx, msg)
	log := r.log.With("outcome", string(out), "team_id", msg.TeamID, "channel_id", msg.ChannelID, "ts", msg.TS, "event_id", msg.EventID)
	switch {
	case err != nil:
		log.Error("route message", "error", err)
	case out == Enqueued:
		log.Debug("message enqueued", "tenant_id", msg.TenantID, "wait", time.Since(msg.ReceivedAt))
	default:
		log.Debug("message not answered")
	}
}

// Route decides what to do with one message and does it. The error, when
// not nil, explains a failure (it is for logs; the Slack user has already
// been told, when that was possible).
func (r *Router) Route(ctx context.Context, msg konstruct.Message) (out Outcome, err error) {
	start := time.Now()
	defer func() { r.cfg.Metrics.Route(string(out), time.Since(start)) }()

	// Decisions from the message alone first: no I/O for the noise.
	if o, skip := filter(msg); skip {
		return o, nil
	}

	ws, err := r.tenants.get(ctx, msg.TeamID)
	switch {
	case konstruct.ErrorCode(err) == konstruct.ENOTFOUND:
		r.logUnknown(msg)
		return UnknownWorkspace, nil
	case err != nil:
		if msg.IsMention || msg.IsDM {
			r.tellFailure(ctx, msg, "")
		}
		return TenantError, fmt.Errorf("resolve tenant: %w", err)
	}
	if ws.BotUserID != "" && msg.User == ws.BotUserID {
		return Bot, nil
	}
	msg.TenantID = ws.TenantID
	msg.BotUserID = ws.BotUserID

	// Addressed to us? Decided before anything is claimed, so a twin that is
	// not for us (the message event of a top-level mention) never marks the
	// post as seen.
	if !msg.IsDM && !msg.IsMention {
		if !msg.InThread() {
			return NotAddressed, nil
		}
		engaged, err := r.deps.Threads.Engaged(ctx, ws.TenantID, msg.ChannelID, msg.ThreadTS)
		if err != nil {
			r.log.Warn("engaged thread lookup failed; treating as not engaged", "error", err, "team_id", msg.TeamID)
		}
		if !engaged {
			return NotAddressed, nil
		}
	}

	if dup, err := r.deps.Claims.Claim(ctx, msg.Post(), msg.EventID, ""); err != nil {
		// Fail open: without Redis the enqueue fails too, and the user is
		// told so; a silent drop would be worse than a rare double.
		r.log.Warn("dedupe unavailable; continuing", "error", err, "team_id", msg.TeamID)
	} else if dup {
		return Duplicate, nil
	}

	ok, wait, err := r.deps.Limiter.Allow(ctx, ws.TenantID, msg.ChannelID)
	if err != nil {
		r.log.Warn("rate limiter unavailable; allowing", "error", err, "team_id", msg.TeamID)
	} else if !ok {
		return RateLimited, r.tellRateLimited(ctx, msg, wait)
	}

	placeholder, err := r.deps.Slack.Post(ctx, msg.TeamID, msg.ChannelID, msg.ReplyThreadTS(), konstruct.Content{Text: konstruct.TextThinking})
	if err != nil {
		// Slack is struggling: the worker posts the answer without one.
		r.log.Warn("placeholder not posted; enqueueing without it", "error", err, "team_id", msg.TeamID)
		placeholder = ""
	}
	return r.enqueue(ctx, konstruct.ReplyJob{Message: msg, PlaceholderTS: placeholder})
}

// filter drops what needs no lookup to drop.
func filter(msg konstruct.Message) (Outcome, bool) {
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
	if msg.BotID != "" {
		return Bot, true
	}
	if msg.User == "" || msg.ChannelID == "" || msg.TS == "" || msg.TeamID == "" {
		return Invalid, true
	}
	return "", false
}

func (r *Router) enqueue(ctx context.Context, job konstruct.ReplyJob) (Outcome, error) {
	msg := job.Message
	deadline := time.Now().Add(r.cfg.EnqueueRetryFor)
	backoff := 100 * time.Millisecond
	var err error
	for attempt := 1; ; attempt++ {
		job.EnqueuedAt = time.Now()
		err = r.deps.Enqueuer.Enqueue(ctx, job)
		if err == nil {
			r.cfg.Metrics.TaskEnqueued()
			return Enqueued, nil
		}
		if konstruct.ErrorCode(err) == konstruct.ECONFLICT {
			// Another daemon (or an earlier delivery) enqueued this post
			// and has its own placeholder: ours must not linger.
			if job.PlaceholderTS != "" {
				if derr := r.deps.Slack.Delete(ctx, msg.TeamID, msg.ChannelID, job.PlaceholderTS); derr != nil {
					r.log.Warn("delete duplicate placeholder", "error", derr, "team_id", msg.TeamID)
				}
			}
			return Duplicate, nil
		}
		if ctx.Err() != nil || time.Now().Add(backoff).After(deadline) {
			break
		}
		r.log.Warn("enqueue failed; retrying", "attempt", attempt, "error", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		backoff = min(backoff*2, 2*time.Second)
	}
	r.tellFailure(ctx, msg, job.PlaceholderTS)
	return EnqueueFailed, fmt.Errorf("enqueue reply: %w", err)
}

// tellFailure turns the placeholder (or, without one, a new message in the
// thread) into the "couldn't queue" text, so no acked message disappears
// without a trace.
func (r *Router) tellFailure(ctx context.Context, msg konstruct.Message, placeholderTS string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var err error
	if placeholderTS != "" {
		err = r.deps.Slack.Update(ctx, msg.TeamID, msg.ChannelID, placeholderTS, konstruct.Content{Text: TextEnqueueFailed})
	} else {
		_, err = r.deps.Slack.Post(ctx, msg.TeamID, msg.ChannelID, msg.ReplyThreadTS(), konstruct.Content{Text: TextEnqueueFailed})
	}
	if err != nil {
		r.log.Error("could not tell the user their message was not queued", "error", err,
			"team_id", msg.TeamID, "channel_id", msg.ChannelID, "ts", msg.TS)
	}
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
