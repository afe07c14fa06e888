package worker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/markdown"
	"github.com/konstruct/konstruct/internal/wait"
)

// Slack methods whose budget the worker takes (queue.DefaultSlackTiers).
const (
	methodUpdate = "chat.update"
	methodAppend = "chat.appendStream"
	methodPost   = "chat.postMessage"
	methodDelete = "chat.delete"
)

// maxFinalWait bounds how long a final edit waits for the workspace's
// chat.update budget: past it the answer takes another path (a new message,
// budgeted per channel, with the placeholder deleted under chat.delete's
// own budget) rather than keep the person waiting.
const maxFinalWait = 2 * time.Second

// errOverBudget says a write would wait past maxFinalWait for its budget.
var errOverBudget = errors.New("the Slack budget of this method is spent for now")

// take asks for a write of method now; it returns how long it would have to
// wait (0: go). Without Redis the write goes: budgets protect Slack's
// limits, and a 429 is honoured anyway.
func (w *Server) take(ctx context.Context, post konstruct.Post, method string, p konstruct.Priority) time.Duration {
	d, err := w.deps.Budgets.TakeSlack(ctx, post.TeamID, post.ChannelID, method, p)
	if err != nil {
		w.log.LogAttrs(ctx, slog.LevelDebug, "slack budget unavailable; writing anyway", slog.String("error", err.Error()))
		return 0
	}
	return d
}

// pause holds a method back in every process after Slack's 429.
func (w *Server) pause(ctx context.Context, teamID, method string, d time.Duration) {
	if err := w.deps.Budgets.PauseSlack(ctx, teamID, method, d); err != nil {
		w.log.LogAttrs(ctx, slog.LevelDebug, "record slack pause", slog.String("error", err.Error()))
	}
}

// write is the one retry discipline of a Slack write that must land: it
// waits for its share of the workspace's budget of the method (shared by
// every process) and any Retry-After, tries again after a rate limit until
// ctx ends, and after other transient failures a few times. With maxWait >
// 0, budget waits adding up to more than that give errOverBudget instead. landed,
// when set, is asked before each retry whether the failed write landed
// after all (a chat.postMessage whose answer was lost): retrying it blindly
// would post twice.
func (w *Server) write(ctx context.Context, post konstruct.Post, method string, p konstruct.Priority, maxWait time.Duration,
	do func(context.Context) error, landed func(context.Context) bool) error {
	failures := 0
	var waited time.Duration // for the budget (and pauses), all tries together
	for {
		if d := w.take(ctx, post, method, p); d > 0 {
			// The bound is on the whole wait: a write that lost the race
			// for the next slot to another waiter tries again, each try
			// told "about one interval", and would otherwise wait on
			// while the waiters drain at the method's rate.
			if maxWait > 0 && waited+d > maxWait {
				return errOverBudget
			}
			if !wait.Sleep(ctx, d) {
				return ctx.Err()
			}
			waited += d
			continue
		}
		err := do(ctx)
		if err == nil {
			return nil
		}
		if d, ok := konstruct.RetryAfter(err); ok {
			w.pause(ctx, post.TeamID, method, d)
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

// finalEdit replaces a message's content, and does not give up on rate
// limits; with maxWait > 0 it gives errOverBudget rather than wait longer
// than that for the budget.
func (w *Server) finalEdit(ctx context.Context, post konstruct.Post, ts string, c konstruct.Content, maxWait time.Duration) error {
	return w.write(ctx, post, methodUpdate, konstruct.PriorityFinal, maxWait, func(ctx context.Context) error {
		return w.deps.Slack.Update(ctx, post.TeamID, post.ChannelID, ts, c)
	}, nil)
}

// stopped reports whether the asker of the post pressed Stop (a Redis
// failure reads as no: the answer goes on).
func (w *Server) stopped(ctx context.Context, post konstruct.Post) bool {
	ok, err := w.deps.Stops.ReplyStopped(ctx, post)
	if err != nil {
		w.log.LogAttrs(ctx, slog.LevelDebug, "read stop", slog.String("error", err.Error()))
		return false
	}
	return ok
}

// postOnce posts a message in the thread without ever posting it twice: on
// an answer that did not come back (timeout, 5xx, connection lost) it looks
// in the thread, after the message `after`, for the message before trying
// again.
func (w *Server) postOnce(ctx context.Context, post konstruct.Post, threadTS string, c konstruct.Content, after string, p konstruct.Priority) (string, error) {
	var ts string
	err := w.write(ctx, post, methodPost, p, 0, func(ctx context.Context) error {
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
