package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/llm"
)

// meter counts a reply's LLM tokens against its tenant's budgets while
// they are spent: the prompt's estimate when the request starts, the
// answer's estimate while it streams (so that a budget can run out in the
// middle of a long answer, and the next question already gets the
// budget's line), then, when the model is done, the provider's own figures
// (estimates when it reports none) replace the estimates (settle).
//
// The budget itself is checked by the router when a question is admitted:
// an answer under way always finishes. The meter logs and counts the
// crossings of 80 % and 100 % of a budget, each once, when they happen.
type meter struct {
	w      *Server
	tenant string
	log    *slog.Logger

	mu      sync.Mutex
	prompt  int64 // the prompt's estimate
	counted int64 // what this reply added to the counters so far
}

func (w *Server) newMeter(tenantID string, log *slog.Logger) *meter {
	return &meter{w: w, tenant: tenantID, log: log}
}

// start counts the prompt's estimate as the request goes out.
func (m *meter) start(ctx context.Context, msgs []llm.Message) {
	m.mu.Lock()
	m.prompt = int64(llm.EstimateMessagesTokens(msgs))
	m.mu.Unlock()
	m.to(ctx, 0)
}

// streamed counts the estimate of the answer so far.
func (m *meter) streamed(ctx context.Context, text string) {
	m.to(ctx, int64(llm.EstimateTokens(text)))
}

// settle replaces the estimates with the request's final figures: what the
// provider reported (or estimated by llm when it reported nothing), 0 when
// no answer came at all. It runs to the end even when ctx ends: the tokens
// were spent.
func (m *meter) settle(ctx context.Context, total int) {
	ctx, cancel := detached(ctx, 5*time.Second)
	defer cancel()
	m.mu.Lock()
	m.prompt = 0
	m.mu.Unlock()
	m.to(ctx, int64(total))
}

// to brings what the reply counted to prompt + answer tokens.
func (m *meter) to(ctx context.Context, answer int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.prompt + answer - m.counted
	if n == 0 {
		return
	}
	day, month, err := m.w.deps.Usage.AddTokens(ctx, m.tenant, m.w.cfg.Now(), n)
	if err != nil {
		// Not counted: the next step adds the difference.
		m.log.LogAttrs(ctx, slog.LevelWarn, "count tokens", slog.String("error", err.Error()))
		return
	}
	m.counted += n
	if n > 0 {
		m.w.crossings(ctx, m.tenant, m.log, day-n, day, month-n, month)
	}
}

// crossings logs and counts the budgets whose 80 % or 100 % mark the
// tenant's counters just passed (from prev to cur).
func (w *Server) crossings(ctx context.Context, tenantID string, log *slog.Logger, prevDay, day, prevMonth, month int64) {
	pol, err := w.deps.Policies.Policy(ctx, tenantID)
	if err != nil {
		return
	}
	for _, b := range []struct {
		period          string
		limit, prev, at int64
	}{{konstruct.PeriodDay, pol.TokensPerDay, prevDay, day}, {konstruct.PeriodMonth, pol.TokensPerMonth, prevMonth, month}} {
		if b.limit <= 0 {
			continue
		}
		attrs := []slog.Attr{slog.String("period", b.period), slog.Int64("tokens", b.at), slog.Int64("budget", b.limit)}
		if b.prev*5 < b.limit*4 && b.at*5 >= b.limit*4 {
			log.LogAttrs(ctx, slog.LevelWarn, "token budget 80% used", attrs...)
			w.cfg.Metrics.BudgetCrossed(b.period, 80)
		}
		if b.prev < b.limit && b.at >= b.limit {
			log.LogAttrs(ctx, slog.LevelWarn, "token budget used up: new questions get the budget line until it resets", attrs...)
			w.cfg.Metrics.BudgetCrossed(b.period, 100)
		}
	}
}
