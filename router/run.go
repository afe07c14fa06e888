package router

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/tracing"
	"github.com/konstruct/konstruct/internal/wait"
)

// Run routes the intake's records until ctx ends: a reader takes new
// records (and, first, those this consumer left unfinished), a reclaimer
// takes over records other consumers left unfinished beyond the lease, and
// Workers goroutines route them. A record is finished once its outcome is
// durable; a transient error (Redis, Postgres, Slack) routes it again with
// backoff, and it stays in the intake meanwhile. Once ctx ends, the records
// taken are routed within DrainTimeout; the others stay for the next
// process.
func (r *Router) Run(ctx context.Context) error {
	// Routing outlives ctx by DrainTimeout; reading stops with ctx.
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	stopDrain := context.AfterFunc(ctx, func() {
		t := time.NewTimer(r.cfg.DrainTimeout)
		defer t.Stop()
		select {
		case <-work.Done():
		case <-t.C:
			r.log.Warn("drain timeout: records still being routed stay in the intake for the next process")
			stopWork()
		}
	})
	defer stopDrain()

	recs := make(chan konstruct.Record, r.cfg.Workers)
	taken := &takenSet{ids: map[string]bool{}}
	var feeders, workers sync.WaitGroup
	feeders.Go(func() { r.read(ctx, recs, taken) })
	feeders.Go(func() { r.reclaim(ctx, recs, taken) })
	var leftMu sync.Mutex
	var left []string // taken, and not finished before the stop
	for range r.cfg.Workers {
		workers.Go(func() {
			for rec := range recs {
				if !r.routeRecord(work, rec) {
					leftMu.Lock()
					left = append(left, rec.ID)
					leftMu.Unlock()
				}
				taken.done(rec.ID)
			}
		})
	}
	feeders.Wait()
	close(recs)
	workers.Wait()
	if len(left) > 0 {
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := r.deps.Intake.HandBackIntake(hctx, r.cfg.Consumer, left...); err != nil {
			r.log.Warn("hand back intake records; they are taken over after the lease", "records", len(left), "error", err)
		} else {
			r.log.Info("handed back intake records not routed before the stop", "records", len(left))
		}
	}
	return nil
}

// takenSet is the records this process is routing: a record read and
// reclaimed at once is routed once.
type takenSet struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (t *takenSet) take(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ids[id] {
		return false
	}
	t.ids[id] = true
	return true
}

func (t *takenSet) done(id string) {
	t.mu.Lock()
	delete(t.ids, id)
	t.mu.Unlock()
}

func (r *Router) read(ctx context.Context, out chan<- konstruct.Record, taken *takenSet) {
	failures := 0
	after := "0" // first, what this consumer took before a restart
	for ctx.Err() == nil {
		batch, err := r.deps.Intake.ReadIntake(ctx, r.cfg.Consumer, r.cfg.Workers, time.Second, after)
		if err != nil {
			if ctx.Err() == nil {
				r.logThrottled("read intake", err, failures)
			}
			failures++
			wait.Sleep(ctx, r.retryDelay(failures))
			continue
		}
		failures = 0
		if after != "" {
			if len(batch) == 0 {
				after = "" // from now on, new records
				continue
			}
			after = batch[len(batch)-1].ID
		}
		r.feed(ctx, out, batch, taken)
	}
}

func (r *Router) reclaim(ctx context.Context, out chan<- konstruct.Record, taken *takenSet) {
	t := time.NewTicker(r.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		batch, err := r.deps.Intake.ReclaimIntake(ctx, r.cfg.Consumer, r.cfg.Lease, 100)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Debug("reclaim intake", "error", err)
			}
			continue
		}
		if len(batch) > 0 {
			r.log.Info("took over intake records another process left unfinished", "records", len(batch))
		}
		r.feed(ctx, out, batch, taken)
	}
}

func (r *Router) feed(ctx context.Context, out chan<- konstruct.Record, batch []konstruct.Record, taken *takenSet) {
	for _, rec := range batch {
		if !taken.take(rec.ID) {
			continue
		}
		select {
		case out <- rec:
		case <-ctx.Done():
			taken.done(rec.ID) // left in the intake for the next process
		}
	}
}

// routeRecord routes one record until its outcome is durable, then
// finishes it; it gives up only when ctx ends (the record stays in the
// intake) and then reports false.
func (r *Router) routeRecord(ctx context.Context, rec konstruct.Record) (routed bool) {
	if ctx.Err() != nil {
		return false
	}
	msg := rec.Message
	var span trace.Span
	if r.cfg.Tracer != nil {
		ctx, span = r.startRoute(ctx, rec)
		if span != nil {
			defer func() { endRoute(span, routed, ctx.Err()) }()
		}
	}
	for attempt := 0; ; attempt++ {
		out, err := r.Route(ctx, rec)
		if span != nil {
			traceAttempt(span, out, err)
		}
		if err == nil {
			if ferr := r.finish(ctx, rec.ID); ferr != nil {
				return false // routed; finished by whoever routes it again, idempotently
			}
			if out == Enqueued {
				r.log.Debug("message enqueued", "tenant_id", msg.TenantID, "team_id", msg.TeamID, "ts", msg.TS, "wait", time.Since(msg.ReceivedAt))
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if !retryable(err) {
			// Trying again would meet the same refusal (Slack refusing the
			// channel, an invalid message): say so once and let it go.
			r.log.LogAttrs(ctx, slog.LevelError, "route message: refused for good", slog.String("error", err.Error()),
				slog.String("team_id", msg.TeamID), slog.String("channel_id", msg.ChannelID), slog.String("ts", msg.TS))
			return r.finish(ctx, rec.ID) == nil
		}
		r.cfg.Metrics.RouteRetry()
		d := r.retryDelay(attempt)
		r.log.LogAttrs(ctx, slog.LevelWarn, "route message: will try again", slog.String("error", err.Error()),
			slog.Int("attempt", attempt+1), slog.Duration("retry_in", d),
			slog.String("team_id", msg.TeamID), slog.String("channel_id", msg.ChannelID), slog.String("ts", msg.TS))
		if !wait.Sleep(ctx, d) {
			return false
		}
		rec.Redelivered = true
	}
}

// startRoute continues the record's trace (started by the gateway) with
// the span of its routing, all attempts together; a record with no trace
// gets none.
func (r *Router) startRoute(ctx context.Context, rec konstruct.Record) (context.Context, trace.Span) {
	return tracing.Continue(ctx, r.cfg.Tracer, rec.Message.TraceParent, "route",
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("slack.team_id", rec.Message.TeamID),
			attribute.Bool("route.redelivered", rec.Redelivered),
		))
}

// traceAttempt puts one attempt's outcome on the route's span: the
// decision, or the error that has it tried again (or given up).
func traceAttempt(span trace.Span, out Outcome, err error) {
	if err == nil {
		span.SetAttributes(attribute.String("route.outcome", string(out)))
		return
	}
	span.AddEvent("route.attempt_failed", trace.WithAttributes(attribute.String("error.type", tracing.ErrorType(err))))
	if !retryable(err) {
		tracing.Fail(span, err)
	}
}

// endRoute ends the route's span; a record not finished (the process
// stopped first) stays in the intake for the next routing.
func endRoute(span trace.Span, routed bool, stopped error) {
	if !routed && stopped != nil {
		span.SetAttributes(attribute.String("route.outcome", "handed_back"))
		tracing.Fail(span, stopped)
	}
	span.End()
}

// finish acknowledges a routed record, retrying briefly: a record not
// finished is routed again after the lease, harmlessly.
func (r *Router) finish(ctx context.Context, id string) error {
	var err error
	for attempt := range 5 {
		if err = r.deps.Intake.DoneIntake(ctx, id); err == nil {
			return nil
		}
		if !wait.Sleep(ctx, r.retryDelay(attempt)) {
			break
		}
	}
	r.log.Warn("finish intake record", "error", err, "id", id)
	return err
}

// logThrottled logs a repeating failure at most every 10 s.
func (r *Router) logThrottled(what string, err error, n int) {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	if time.Since(r.lastLog) < 10*time.Second {
		return
	}
	r.lastLog = time.Now()
	r.log.Warn(what, "error", err, "failures", n+1)
}

// retryable reports whether routing again may get past err: an outage or
// a rate limit may pass; a refusal (Slack's error code, an invalid
// message, a token refused) will not.
func retryable(err error) bool {
	if konstruct.SlackCode(err) != "" {
		return false
	}
	switch konstruct.ErrorCode(err) {
	case konstruct.EINVALID, konstruct.ENOTFOUND, konstruct.EUNAUTHORIZED:
		return false
	}
	return true
}
