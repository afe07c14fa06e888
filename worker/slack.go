package worker

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/markdown"
	"github.com/konstruct/konstruct/internal/wait"
)

// Slack methods whose budget is tracked per workspace.
const (
	methodUpdate = "chat.update"
	methodAppend = "chat.appendStream"
	methodPost   = "chat.postMessage"
)

// budgets holds, per workspace, the write budget every reply streaming in
// it shares in this process, and how long Slack asked us to back off.
type budgets struct {
	perMinute float64

	mu    sync.Mutex
	teams map[string]*teamBudget
}

func newBudgets(perMinute float64) *budgets {
	return &budgets{perMinute: perMinute, teams: map[string]*teamBudget{}}
}

// teamBudget is one workspace's budget. Intermediate edits take a token
// only when at least reserveTokens are left, so final edits, which wait for
// their token, are served first when the budget runs short.
type teamBudget struct {
	limiters map[string]*rate.Limiter

	mu      sync.Mutex
	blocked map[string]time.Time // method → until when Slack asked us to wait
}

const (
	budgetBurst   = 10 // Slack tolerates short bursts above Tier 3 (~50/min); a burst of questions should not queue
	reserveTokens = 2
)

func (b *budgets) team(teamID string) *teamBudget {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.teams[teamID]
	if t == nil {
		per := rate.Limit(b.perMinute / 60)
		t = &teamBudget{
			limiters: map[string]*rate.Limiter{
				methodUpdate: rate.NewLimiter(per, budgetBurst),
				// appendStream is Tier 4 (~100/min): twice the edit budget.
				methodAppend: rate.NewLimiter(2*per, budgetBurst),
			},
			blocked: map[string]time.Time{},
		}
		b.teams[teamID] = t
	}
	return t
}

// block records a Retry-After: no call of that method until it passed.
func (t *teamBudget) block(method string, d time.Duration) {
	d = max(d, time.Second)
	t.mu.Lock()
	defer t.mu.Unlock()
	if until := time.Now().Add(d); until.After(t.blocked[method]) {
		t.blocked[method] = until
	}
}

func (t *teamBudget) blockedFor(method string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return time.Until(t.blocked[method])
}

// tryIntermediate reports whether an intermediate write may go now. It never
// waits: a skipped edit is simply folded into the next one.
func (t *teamBudget) tryIntermediate(method string) bool {
	if t.blockedFor(method) > 0 {
		return false
	}
	lim := t.limiters[method]
	if lim.Tokens() < reserveTokens {
		return false
	}
	return lim.Allow()
}

// maxFinalWait bounds how long a final write waits for the budget: past
// it the write goes anyway (the debt holds intermediate edits back), since
// an answer held back is worse than a possible 429, which is then honoured.
const maxFinalWait = 2 * time.Second

// waitFinal waits until a write that must land may go: after any
// Retry-After, and for its share of the budget up to maxFinalWait.
func (t *teamBudget) waitFinal(ctx context.Context, method string) error {
	if !wait.Sleep(ctx, t.blockedFor(method)) {
		return ctx.Err()
	}
	if lim := t.limiters[method]; lim != nil {
		if d := lim.Reserve().Delay(); d > 0 && !wait.Sleep(ctx, min(d, maxFinalWait)) {
			return ctx.Err()
		}
	}
	return nil
}

// write is the one retry discipline of a Slack write that must land: it
// waits for the workspace's budget of the method and any Retry-After, tries
// again after a rate limit until ctx ends, and after other transient
// failures a few times. landed, when set, is asked before each retry
// whether the failed write landed after all (a chat.postMessage whose
// answer was lost): retrying it blindly would post twice.
func (w *Server) write(ctx context.Context, teamID, method string, do func(context.Context) error, landed func(context.Context) bool) error {
	tb := w.budgets.team(teamID)
	failures := 0
	for {
		if err := tb.waitFinal(ctx, method); err != nil {
			return err
		}
		err := do(ctx)
		if err == nil {
			return nil
		}
		if d, ok := konstruct.RetryAfter(err); ok {
			tb.block(method, d)
			continue
		}
		if !transient(err) || ctx.Err() != nil {
			return err
		}
		if failures++; failures >= 4 || !wait.Sleep(ctx, time.Duration(failures)*time.Second) {
			return err
		}
		if landed != nil && landed(ctx) {
			return nil
		}
	}
}

// finalEdit replaces a message's content with Markdown, and does not give
// up on rate limits.
func (w *Server) finalEdit(ctx context.Context, post konstruct.Post, ts, md string) error {
	return w.write(ctx, post.TeamID, methodUpdate, func(ctx context.Context) error {
		return w.deps.Slack.Update(ctx, post.TeamID, post.ChannelID, ts, konstruct.Content{Markdown: md})
	}, nil)
}

// postOnce posts a message in the thread without ever posting it twice: on
// an answer that did not come back (timeout, 5xx, connection lost) it looks
// in the thread, after the message `after`, for the message before trying
// again.
func (w *Server) postOnce(ctx context.Context, post konstruct.Post, threadTS string, c konstruct.Content, after string) (string, error) {
	var ts string
	err := w.write(ctx, post.TeamID, methodPost, func(ctx context.Context) error {
		var err error
		ts, err = w.deps.Slack.Post(ctx, post.TeamID, post.ChannelID, threadTS, c)
		return err
	}, func(ctx context.Context) bool {
		msgs, err := w.deps.Slack.Replies(ctx, post.TeamID, post.ChannelID, threadTS)
		if err != nil {
			return false
		}
		want := strings.TrimSpace(notificationText(c))
		for i := len(msgs) - 1; i >= 0; i-- {
			x := msgs[i]
			if x.BotID != "" && konstruct.TSBefore(after, x.TS) && strings.TrimSpace(x.Text) == want {
				ts = x.TS
				return true
			}
		}
		return false
	})
	return ts, err
}

// notificationText is the text Slack keeps of content (and returns in a
// thread): the plain text, or the Markdown's plain rendering.
func notificationText(c konstruct.Content) string {
	if c.Text != "" {
		return c.Text
	}
	return markdown.Plain(c.Markdown)
}

// transient reports whether trying again may help.
func transient(err error) bool {
	if konstruct.SlackCode(err) != "" {
		return false // Slack answered: it will answer the same
	}
	switch konstruct.ErrorCode(err) {
	case konstruct.EUNAVAILABLE, konstruct.ETIMEOUT, konstruct.ERATELIMIT, konstruct.EINTERNAL:
		return true
	}
	return false
}

// stopStream ends a native stream (one that ended already is fine).
func (w *Server) stopStream(ctx context.Context, post konstruct.Post, ts string) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := w.deps.Slack.StopStream(cctx, post.TeamID, post.ChannelID, ts, ""); err != nil && konstruct.SlackCode(err) != "message_not_in_streaming_state" {
		w.log.LogAttrs(ctx, slog.LevelDebug, "stop stream", slog.String("error", err.Error()))
	}
}

// deleteQuietly deletes a message of ours that must not linger (a second
// placeholder); failing is logged, not fatal.
func (w *Server) deleteQuietly(ctx context.Context, post konstruct.Post, ts string) {
	if ts == "" {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := w.deps.Slack.Delete(cctx, post.TeamID, post.ChannelID, ts); err != nil && konstruct.SlackCode(err) != "message_not_found" {
		w.log.LogAttrs(ctx, slog.LevelWarn, "delete extra message", slog.String("error", err.Error()))
	}
}
