package worker

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/konstruct/konstruct"
)

// RunJanitor resolves, every JanitorInterval until ctx ends, the replies
// whose heartbeat ran out (their process crashed and no retry took them
// over): an answer already generated is delivered, anything else becomes a
// short error in place of the placeholder, recorded as OutcomeOrphaned.
// Several processes may run it: each orphan is claimed by one.
func (w *Server) RunJanitor(ctx context.Context) {
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
	keys, err := w.deps.Redis.ZRangeByScore(ctx, w.inflightKey(), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(time.Now().UnixMilli(), 10), Count: 100,
	}).Result()
	if err != nil {
		return 0, redisErr("list orphaned replies", err)
	}
	n := 0
	var errs []error
	for _, key := range keys {
		// Claim it: only one janitor wins the ZREM.
		won, err := w.deps.Redis.ZRem(ctx, w.inflightKey(), key).Result()
		if err != nil {
			errs = append(errs, redisErr("claim orphaned reply", err))
			continue
		}
		if won == 0 {
			continue
		}
		done, err := w.resolveOrphan(ctx, key)
		if err != nil {
			errs = append(errs, err)
			// Give it back for a later sweep.
			_ = w.deps.Redis.ZAdd(context.WithoutCancel(ctx), w.inflightKey(), redis.Z{
				Score: float64(time.Now().Add(w.cfg.JanitorInterval).UnixMilli()), Member: key,
			}).Err()
			continue
		}
		if done {
			n++
		}
	}
	return n, errors.Join(errs...)
}

func (w *Server) resolveOrphan(ctx context.Context, key string) (bool, error) {
	rec := w.recordFor(key)
	token, err := rec.lock(ctx)
	if errors.Is(err, errLocked) {
		// A delivery is running after all: its heartbeat re-indexes it.
		return false, rec.heartbeat(ctx)
	}
	if err != nil {
		return false, err
	}
	defer rec.unlock(context.WithoutCancel(ctx), token)
	p, exists, err := rec.load(ctx)
	if err != nil {
		return false, err
	}
	if !exists || p.State == stateDone || p.mainTS() == "" {
		return false, nil
	}
	log := w.log.With(slog.String("tenant_id", p.TenantID), slog.String("team_id", p.TeamID), slog.String("channel_id", p.ChannelID))
	if p.StreamTS != "" {
		w.stopStream(ctx, p.TeamID, p.ChannelID, p.StreamTS)
	}
	text, outcome, code := textOrphaned, konstruct.OutcomeOrphaned, konstruct.EUNAVAILABLE
	if p.State == stateGenerated && p.Text != "" {
		text, outcome, code = p.Text, konstruct.OutcomeAnswered, ""
	}
	fctx, cancel := context.WithTimeout(ctx, w.cfg.FinalizeTimeout)
	defer cancel()
	if err := w.deliver(fctx, rec, p, p.TeamID, p.ChannelID, p.ThreadTS, text); err != nil {
		if !transient(err) {
			log.LogAttrs(ctx, slog.LevelError, "orphaned reply undeliverable", slog.String("error", err.Error()))
			return false, rec.finish(ctx, konstruct.OutcomeOrphaned, konstruct.ErrorCode(err))
		}
		return false, err
	}
	if err := rec.finish(ctx, outcome, code); err != nil {
		return true, err
	}
	stats := p.stats()
	w.writeReply(ctx, konstruct.Reply{
		TenantID: p.TenantID, TeamID: p.TeamID, ChannelID: p.ChannelID, ThreadTS: p.ThreadTS,
		MessageTS: p.mainTS(), EventID: p.EventID, Model: stats.Model, Provider: stats.Provider,
		PromptTokens: stats.PromptTokens, CompletionTokens: stats.CompletionTokens,
		TimeToFirstToken: stats.TimeToFirstToken, Latency: stats.Latency, Outcome: outcome, Error: code,
	}, log)
	w.cfg.Metrics.Reply(outcome, 0)
	return true, nil
}
