package worker

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/konstruct/konstruct"
)

// runJanitor sweeps, every JanitorInterval until ctx ends, the replies
// whose heartbeat ran out: their process died (or never queued them) and
// nobody else is finishing them. Several processes may run it: each
// orphan is claimed by one.
func (w *Server) runJanitor(ctx context.Context) {
	t := time.NewTicker(w.cfg.JanitorInterval)
	defer t.Stop()
	var takeovers sync.WaitGroup
	defer takeovers.Wait()
	for {
		if n, err := w.sweep(ctx, &takeovers); err != nil && ctx.Err() == nil {
			w.log.LogAttrs(ctx, slog.LevelWarn, "janitor sweep", slog.String("error", err.Error()))
		} else if n > 0 {
			w.log.LogAttrs(ctx, slog.LevelInfo, "janitor took over orphaned replies", slog.Int("count", n))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep finishes the orphaned replies due now and returns how many it
// finished (tests call it; Run's janitor calls sweep).
func (w *Server) Sweep(ctx context.Context) (int, error) {
	var wg sync.WaitGroup
	n, err := w.sweep(ctx, &wg)
	wg.Wait()
	return n, err
}

// sweep looks at each due reply: one whose task is queued or running (a
// worker will resume it; asynq hands a dead worker's task back) is looked
// at again later; one that no task will finish — none was queued within
// OrphanGrace, or it ended without finishing the reply, or the worker
// that runs it stopped sending heartbeats — is taken over: answered here
// from its recorded job (in the same messages), else finished with a short
// error. Takeovers run in the background, at most a few at once, counted
// in the returned n once started.
func (w *Server) sweep(ctx context.Context, takeovers *sync.WaitGroup) (int, error) {
	due, err := w.deps.States.DueReplies(ctx, 100)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, post := range due {
		won, err := w.deps.States.ClaimDue(ctx, post)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !won {
			continue
		}
		later, err := w.orphan(ctx, post, takeovers)
		if err != nil {
			errs = append(errs, err)
			later = w.cfg.JanitorInterval
		}
		if later > 0 {
			rctx, cancel := detached(ctx, 5*time.Second)
			_ = w.deps.States.Reschedule(rctx, post, w.cfg.Now().Add(later))
			cancel()
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// orphan decides about one due reply; later > 0 puts it back in the index.
func (w *Server) orphan(ctx context.Context, post konstruct.Post, takeovers *sync.WaitGroup) (later time.Duration, err error) {
	st, exists, err := w.deps.States.LoadReply(ctx, post)
	if err != nil {
		return 0, err
	}
	if !exists {
		return 0, nil
	}
	if st.Stage == konstruct.StageDone {
		if len(st.Cleanup) > 0 {
			if w.cleanup(ctx, &st); len(st.Cleanup) > 0 {
				return 10 * time.Second, nil // chat.delete's budget is still spent
			}
		}
		return 0, nil
	}
	task, err := w.deps.States.TaskState(ctx, post)
	if err != nil {
		return 0, err
	}
	switch task {
	case "waiting", "pending", "scheduled", "retry":
		return 4 * w.cfg.JanitorInterval, nil // a worker will take it
	case "":
		if w.cfg.Now().Sub(st.Started) < w.cfg.OrphanGrace {
			return w.cfg.JanitorInterval, nil // the router is still on it
		}
	}
	// "active" past its heartbeat: the worker died (asynq hands its task
	// back only a minute or two later; the lease keeps the two apart).
	if !w.takeover.TryAcquire(1) {
		return w.cfg.JanitorInterval, nil
	}
	takeovers.Go(func() {
		defer w.takeover.Release(1)
		w.takeOver(ctx, st)
	})
	return 0, nil
}

// takeOver finishes an orphaned reply: answered from its recorded job when
// it has one (a delivery like any other, in the same messages), else with
// the answer already generated, else with a short error.
func (w *Server) takeOver(ctx context.Context, st konstruct.ReplyState) {
	if w.cfg.Tracer != nil && st.Job != nil {
		var span trace.Span
		if ctx, span = w.startTakeover(ctx, st); span != nil {
			defer span.End()
		}
	}
	post := st.Post
	log := w.log.With(slog.String("tenant_id", post.TenantID), slog.String("team_id", post.TeamID), slog.String("channel_id", post.ChannelID), slog.String("ts", post.TS))
	if st.Job != nil && st.Stage != konstruct.StageFinal {
		err := w.Handle(ctx, *st.Job, konstruct.Delivery{MaxRetry: 1})
		if _, deferred := konstruct.Deferred(err); deferred || (err != nil && !errors.Is(err, konstruct.ErrNoRetry)) {
			// Still held by someone, or a transient failure: again later.
			rctx, cancel := detached(ctx, 5*time.Second)
			_ = w.deps.States.Reschedule(rctx, post, w.cfg.Now().Add(w.cfg.JanitorInterval))
			cancel()
		}
		return
	}
	lease, err := w.deps.States.AcquireReply(ctx, post, nil)
	if err != nil {
		rctx, cancel := detached(ctx, 5*time.Second)
		_ = w.deps.States.Reschedule(rctx, post, w.cfg.Now().Add(w.cfg.JanitorInterval))
		cancel()
		return
	}
	defer func() {
		rctx, cancel := detached(ctx, 5*time.Second)
		lease.Release(rctx)
		cancel()
	}()
	if st, _, err = w.deps.States.LoadReply(ctx, post); err != nil || st.Stage == konstruct.StageDone || st.MainTS() == "" {
		return
	}
	r := &reply{w: w, st: st, lease: lease, log: log}
	if st.Job != nil {
		r.job = *st.Job
		ctx = konstruct.WithAsker(ctx, st.Job.Message.User, st.Job.Message.Text)
	}
	text, outcome, cause := textOrphaned, konstruct.OutcomeOrphaned, error(konstruct.Errorf(konstruct.EUNAVAILABLE, "the process answering stopped"))
	if st.Stage == konstruct.StageFinal && st.Text != "" {
		text, outcome, cause = st.Text, cmp.Or(st.Outcome, konstruct.OutcomeAnswered), nil // answered, or stopped
	}
	if err := r.finish(ctx, text, outcome, cause); err != nil && !errors.Is(err, cause) && !errors.Is(err, konstruct.ErrNoRetry) {
		log.LogAttrs(ctx, slog.LevelWarn, "finish orphaned reply", slog.String("error", err.Error()))
		rctx, cancel := detached(ctx, 5*time.Second)
		_ = w.deps.States.Reschedule(rctx, post, w.cfg.Now().Add(w.cfg.JanitorInterval))
		cancel()
	}
}
