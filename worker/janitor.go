package worker

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/konstruct/konstruct"
)

// runJanitor resolves, every JanitorInterval until ctx ends, the replies
// whose heartbeat ran out (their process crashed and no retry took them
// over): an answer already generated is delivered, anything else becomes a
// short error in place of the placeholder, recorded as OutcomeOrphaned.
// Several processes may run it: each orphan is claimed by one.
func (w *Server) runJanitor(ctx context.Context) {
	t := time.NewTicker(w.cfg.JanitorInterval)
	defer t.Stop()
	for {
		if n, err := w.Sweep(ctx); err != nil && ctx.Err() == nil {
			w.log.LogAttrs(ctx, slog.LevelWarn, "janitor sweep", slog.String("error", err.Error()))
		} else if n > 0 {
			w.log.LogAttrs(ctx, slog.LevelInfo, "janitor resolved orphaned replies", slog.Int("count", n))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep resolves the orphaned replies due now and returns how many.
func (w *Server) Sweep(ctx context.Context) (int, error) {
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
		done, err := w.resolveOrphan(ctx, post)
		if err != nil {
			errs = append(errs, err)
			// Give it back for a later sweep.
			rctx, cancel := detached(ctx, 5*time.Second)
			_ = w.deps.States.Reschedule(rctx, post, time.Now().Add(w.cfg.JanitorInterval))
			cancel()
			continue
		}
		if done {
			n++
		}
	}
	return n, errors.Join(errs...)
}

func (w *Server) resolveOrphan(ctx context.Context, post konstruct.Post) (bool, error) {
	lease, err := w.deps.States.AcquireReply(ctx, post, nil)
	if konstruct.ErrorCode(err) == konstruct.ECONFLICT {
		// A delivery is running after all: its heartbeat indexes it again.
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer func() {
		rctx, cancel := detached(ctx, 5*time.Second)
		lease.Release(rctx)
		cancel()
	}()
	st, exists, err := w.deps.States.LoadReply(ctx, post)
	if err != nil {
		return false, err
	}
	if !exists || st.Stage == konstruct.StageDone || st.MainTS() == "" {
		return false, nil
	}
	r := &reply{w: w, st: st, d: konstruct.Delivery{}, lease: lease,
		log: w.log.With(slog.String("tenant_id", post.TenantID), slog.String("team_id", post.TeamID), slog.String("channel_id", post.ChannelID))}
	text, outcome, cause := textOrphaned, konstruct.OutcomeOrphaned, error(konstruct.Errorf(konstruct.EUNAVAILABLE, "the process answering crashed"))
	if st.Stage == konstruct.StageFinal && st.Text != "" {
		text, outcome, cause = st.Text, konstruct.OutcomeAnswered, nil
	}
	if err := r.finish(ctx, text, outcome, cause); err != nil && !errors.Is(err, cause) {
		if errors.Is(err, konstruct.ErrNoRetry) {
			return false, nil // undeliverable: recorded as such
		}
		return false, err
	}
	return true, nil
}
