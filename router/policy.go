package router

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/konstruct/konstruct"
)

// Outcomes of the tenant's policy, its budgets and the clicks on the
// bot's buttons.
const (
	OutsidePolicy   Outcome = "outside_policy"   // a channel, person or DM the tenant's policy leaves out
	BudgetExhausted Outcome = "budget_exhausted" // the tenant's token budget of the day or month is spent
	Voted           Outcome = "vote"             // a 👍/👎 on an answer, recorded
	StopRequested   Outcome = "stop"             // the asker pressed Stop
	ForeignClick    Outcome = "foreign_click"    // a click from another workspace than the answer's: ignored
	IgnoredClick    Outcome = "ignored_click"    // a button not ours, or Stop pressed by someone else than the asker
)

// Policies gives a tenant's policy (*store.PolicyCache: the store's, kept
// briefly and dropped when the policy changes).
type Policies interface {
	Policy(ctx context.Context, tenantID string) (konstruct.Policy, error)
}

// Usage is what a tenant spent of its token budgets (*queue.Queue).
type Usage interface {
	TokensUsed(ctx context.Context, tenantID string, at time.Time) (day, month int64, err error)
}

// Notes keeps the short notes the router sends to at most one per person
// per UTC day and kind (*queue.Queue).
type Notes interface {
	NoteOnce(ctx context.Context, tenantID, kind, teamID, userID string, at time.Time) (bool, error)
	ForgetNote(ctx context.Context, tenantID, kind, teamID, userID string, at time.Time) error
}

// Records writes the replies row of a question the router refused, so
// that usage counts every question (*store.Store).
type Records interface {
	RecordReply(ctx context.Context, r konstruct.Reply) error
}

// Feedback records 👍/👎 votes (*store.Store); changed is false when the
// same vote was recorded already.
type Feedback interface {
	RecordVote(ctx context.Context, v konstruct.Vote) (changed bool, err error)
}

// Stops asks a streaming reply to stop, in whatever process streams it
// (*queue.Queue).
type Stops interface {
	StopReply(ctx context.Context, post konstruct.Post) error
}

// Kinds of the notes sent at most once per person per UTC day.
const (
	noteDM     = "dm"
	noteBudget = "budget"
)

// TextNotEnabled is the one note a person gets, at most once a day, when
// they DM the AI employee and the tenant's policy leaves them (or DMs) out.
const TextNotEnabled = "Sorry — I'm not enabled for you here. If you need me, please ask your Slack admins."

// BudgetText is the one line a person gets, at most once a day, when the
// tenant's token budget of period (konstruct.PeriodDay or PeriodMonth) is
// spent at now: it says when the AI employee is back.
func BudgetText(period string, now time.Time) string {
	if period == konstruct.PeriodMonth {
		back := konstruct.BudgetReset(period, now)
		return fmt.Sprintf("Sorry — this month's budget is used up; I'm back on %s at 00:00 UTC.", back.Format("2 January"))
	}
	return "Sorry — today's budget is used up; I'm back at 00:00 UTC."
}

// admits applies the tenant's policy to a message: whether it is answered
// (ok), and otherwise the outcome. A DM left out gets TextNotEnabled, once
// a day; a channel message left out gets nothing at all.
func (r *Router) admits(ctx context.Context, msg konstruct.Message, pol konstruct.Policy) (Outcome, bool, error) {
	if msg.IsDM {
		if pol.DMs && pol.AllowsUser(msg.User) {
			return "", true, nil
		}
		return OutsidePolicy, false, r.noteOnce(ctx, msg, noteDM, TextNotEnabled)
	}
	if !pol.AllowsChannel(msg.ChannelID) || !pol.AllowsUser(msg.User) {
		return OutsidePolicy, false, nil
	}
	return "", true, nil
}

// spent says which of the tenant's budgets is used up now ("" for none):
// the month's first, since it is back later.
func (r *Router) spent(ctx context.Context, pol konstruct.Policy, now time.Time) (string, error) {
	if pol.TokensPerDay <= 0 && pol.TokensPerMonth <= 0 {
		return "", nil
	}
	day, month, err := r.deps.Usage.TokensUsed(ctx, pol.TenantID, now)
	if err != nil {
		return "", fmt.Errorf("token budget: %w", err)
	}
	switch {
	case pol.TokensPerMonth > 0 && month >= pol.TokensPerMonth:
		return konstruct.PeriodMonth, nil
	case pol.TokensPerDay > 0 && day >= pol.TokensPerDay:
		return konstruct.PeriodDay, nil
	}
	return "", nil
}

// refuse records a question the model is not asked (code "budget" or
// "rate_limited") as a replies row of outcome refused.
func (r *Router) refuse(ctx context.Context, msg konstruct.Message, code string) error {
	err := r.deps.Records.RecordReply(ctx, konstruct.Reply{
		TenantID: msg.TenantID, TeamID: msg.TeamID, ChannelID: msg.ChannelID, ThreadTS: msg.ReplyThreadTS(),
		EventID: cmp.Or(msg.EventID, msg.Post().String()), Outcome: konstruct.OutcomeRefused, Error: code,
		UserID: msg.User, PostTS: msg.TS,
	})
	if err != nil {
		return fmt.Errorf("record refused question: %w", err)
	}
	return nil
}

// noteOnce sends text to the message's author unless they got a note of
// this kind today (UTC): in a DM as a message in its thread, in a channel
// as an ephemeral. A note that could not be sent is given back, for the
// record's next routing (or the next message) to send.
func (r *Router) noteOnce(ctx context.Context, msg konstruct.Message, kind, text string) error {
	now := r.cfg.Now()
	first, err := r.deps.Notes.NoteOnce(ctx, msg.TenantID, kind, msg.TeamID, msg.User, now)
	if err != nil || !first {
		return err
	}
	if msg.IsDM {
		_, err = r.deps.Slack.Post(ctx, msg.TeamID, msg.ChannelID, msg.ReplyThreadTS(), konstruct.Content{Text: text})
	} else {
		threadTS := ""
		if msg.InThread() {
			threadTS = msg.ThreadTS
		}
		err = r.deps.Slack.PostEphemeral(ctx, msg.TeamID, msg.ChannelID, msg.User, threadTS, text)
	}
	if err != nil {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if ferr := r.deps.Notes.ForgetNote(fctx, msg.TenantID, kind, msg.TeamID, msg.User, now); ferr != nil {
			r.log.Warn("give back a note not sent", "kind", kind, "error", ferr, "team_id", msg.TeamID)
		}
		return fmt.Errorf("%s note: %w", kind, err)
	}
	return nil
}

// routeAction handles a click on one of the bot's buttons. The answer's
// workspace (in the button's value, written by the bot) must be the one
// the click comes from and the clicking person's own: a person of another
// workspace — a guest in a shared channel, or another tenant's workspace
// when tenants share a Slack app — never votes on or stops this tenant's
// answers, and nothing is written for the click in any tenant. What is
// written is under the tenant of the click's workspace only (its Redis
// keys, its RLS-scoped rows).
func (r *Router) routeAction(ctx context.Context, msg konstruct.Message, ws konstruct.Workspace) (Outcome, error) {
	a := msg.Action
	ref, ok := konstruct.ParseAnswerRef(a.Value)
	if !ok {
		return IgnoredClick, nil
	}
	if ref.TeamID != msg.TeamID || (a.UserTeamID != "" && a.UserTeamID != ref.TeamID) || ref.ChannelID != msg.ChannelID {
		r.log.Info("click from another workspace than the answer's ignored", "team_id", msg.TeamID,
			"user_team_id", a.UserTeamID, "answer_team_id", ref.TeamID, "action_id", a.ActionID)
		return ForeignClick, nil
	}
	post := konstruct.Post{TenantID: ws.TenantID, TeamID: ref.TeamID, ChannelID: ref.ChannelID, TS: ref.TS}
	switch a.ActionID {
	case konstruct.ActionVoteUp, konstruct.ActionVoteDown:
		up := a.ActionID == konstruct.ActionVoteUp
		changed, err := r.deps.Feedback.RecordVote(ctx, konstruct.Vote{Post: post, User: msg.User, Up: up, At: msg.Action.At})
		if err != nil {
			return "", fmt.Errorf("record vote: %w", err)
		}
		if changed {
			r.cfg.Metrics.Feedback(up)
		}
		return Voted, nil
	case konstruct.ActionStop:
		if msg.User != ref.Asker {
			// Only who asked may cut their answer short.
			return IgnoredClick, nil
		}
		if err := r.deps.Stops.StopReply(ctx, post); err != nil {
			return "", fmt.Errorf("stop reply: %w", err)
		}
		return StopRequested, nil
	}
	return IgnoredClick, nil
}
