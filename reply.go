package konstruct

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
)

// Post identifies one human post wherever it travels: the app_mention and
// message twins of the post, Slack's redeliveries of either, and every
// process of an install share it. The reply task's id, the dedupe claim and
// the reply's progress record all derive from it (queue/keys.go).
type Post struct {
	TenantID  string `json:"tenant_id"`
	TeamID    string `json:"team_id"`
	ChannelID string `json:"channel_id"`
	TS        string `json:"ts"`
}

// String is tenant:team:channel:ts, the post's one textual identity.
func (p Post) String() string {
	return p.TenantID + ":" + p.TeamID + ":" + p.ChannelID + ":" + p.TS
}

// Valid reports whether every part of the identity is known.
func (p Post) Valid() bool {
	return p.TenantID != "" && p.TeamID != "" && p.ChannelID != "" && p.TS != ""
}

// Record is the durable record of an envelope's message in the intake:
// written before the envelope was acked, routed from, and acknowledged once
// the router's decision is durable. ID is the record's own identity (a
// redelivery of the same event by Slack is another record).
type Record struct {
	ID      string
	Message Message
	// Redelivered is set when the record was taken over from a process
	// that did not finish routing it (or that this process retries).
	Redelivered bool
}

// Priority orders the Slack writes that share a workspace's budget: a
// final answer (or error text) before a placeholder before a streaming
// edit.
type Priority int

const (
	PriorityInterim     Priority = iota // an edit while the answer streams: skipped when the budget is short
	PriorityPlaceholder                 // the placeholder a person waits on
	PriorityFinal                       // the answer, or the error text, and the clean-up that goes with it
)

// RateLimit is the rate limiter's answer for one message.
type RateLimit struct {
	OK         bool
	RetryAfter time.Duration // when the next message would be allowed
	// Notify is true for the first refusal of a person in a window: the
	// "too many requests" note is sent once, not for every message.
	Notify bool
}

// TaskReplyGenerate is the type of the queued task that asks a worker to
// answer a message in its thread.
const TaskReplyGenerate = "reply:generate"

// ReplyJob is the payload of a reply:generate task: the message to answer
// and the placeholder the router already posted in the thread (empty when
// none could be posted).
type ReplyJob struct {
	Message       Message   `json:"message"`
	PlaceholderTS string    `json:"placeholder_ts,omitempty"`
	EnqueuedAt    time.Time `json:"enqueued_at"`
	// Alone says the message is answered on its own: the thread's other
	// messages are not read (the tenant's policy follows no threads,
	// FollowOff).
	Alone bool `json:"alone,omitempty"`
}

// Delivery says which run of a queued task a handler is in.
type Delivery struct {
	Retry    int // 0 on the first run
	MaxRetry int
}

// LastTry reports whether no retry follows a failure of this run.
func (d Delivery) LastTry() bool { return d.Retry >= d.MaxRetry }

// ReplyStage is where a reply stands. A reply moves forward only:
// queued → placeholder → streaming → final → done.
type ReplyStage string

const (
	StageQueued      ReplyStage = "queued"      // taken, no placeholder recorded yet
	StagePlaceholder ReplyStage = "placeholder" // the thread shows the placeholder
	StageStreaming   ReplyStage = "streaming"   // the model is answering into it
	StageFinal       ReplyStage = "final"       // the final text is stored: only delivery is left
	StageDone        ReplyStage = "done"        // the thread shows the answer or an error text; recorded
)

// ReplyState is the durable record of one reply (kept in Redis while it is
// in flight and for a while after), so that any process can resume a reply
// in the same messages, or finish it after a crash.
type ReplyState struct {
	Post          Post       `json:"post"`
	ThreadTS      string     `json:"thread_ts"`
	EventID       string     `json:"event_id,omitempty"`
	Stage         ReplyStage `json:"stage"`
	PlaceholderTS string     `json:"placeholder_ts,omitempty"`
	StreamTS      string     `json:"stream_ts,omitempty"`  // natively streamed message, when one was started
	FollowUps     []string   `json:"follow_ups,omitempty"` // messages carrying the parts after the first
	// Cleanup lists placeholders an answer replaced (posted anew when
	// chat.update's budget was spent) that are still to be deleted.
	Cleanup   []string   `json:"cleanup,omitempty"`
	Text      string     `json:"text,omitempty"` // the final Markdown, from StageFinal until done
	Outcome   string     `json:"outcome,omitempty"`
	ErrorCode string     `json:"error_code,omitempty"`
	Stats     ReplyStats `json:"stats"`
	// Job is the reply's task as it was queued, so that the janitor can
	// take a reply over from a process that died.
	Job *ReplyJob `json:"job,omitempty"`
	// Started is when the reply's state was first recorded.
	Started time.Time `json:"started"`
}

// MainTS is the message that carries the first part of the answer.
func (s *ReplyState) MainTS() string {
	if s.StreamTS != "" {
		return s.StreamTS
	}
	return s.PlaceholderTS
}

// Lease is the exclusive right to write one reply's state and messages.
type Lease interface {
	// Track marks the reply in flight: while the lease is held, nobody
	// takes it over; after a crash the janitor does.
	Track(ctx context.Context) error
	// Release gives the lease up.
	Release(ctx context.Context)
}

// ReplyStats is what the replies row needs from a generation; it is stored
// with the final text so that a retry that only delivers can record it.
type ReplyStats struct {
	Model            string        `json:"model,omitempty"`
	Provider         string        `json:"provider,omitempty"`
	PromptTokens     int           `json:"prompt_tokens,omitempty"`
	CompletionTokens int           `json:"completion_tokens,omitempty"`
	TimeToFirstToken time.Duration `json:"ttft,omitempty"`
	Latency          time.Duration `json:"latency,omitempty"`
}

// Content is what the bot writes in a message: Markdown, which the Slack
// edge renders faithfully (and derives the notification text from), or
// plain Text shown as is.
type Content struct {
	Text     string
	Markdown string
	// Buttons go under the Markdown (the Slack edge drops them for plain
	// Text, and for Markdown too long for its block).
	Buttons []Button
}

// askerKey carries who a reply answers (WithAsker).
type askerKey struct{}

type asker struct{ user, question string }

// WithAsker returns a context for the Slack writes of one reply: who asked
// (their user id) and the raw text of their question. What the bot writes
// under it may mention (notify) the asker and the people the question
// mentions, and nobody else; without it, no mention in what the bot writes
// notifies anyone. Model output can be steered by anyone who writes in the
// thread, so everything else Slack would act on (<!here>, <!channel>, other
// people's mentions, links whose label hides their target) is always shown
// as inert text by the Slack edge.
func WithAsker(ctx context.Context, userID, question string) context.Context {
	return context.WithValue(ctx, askerKey{}, asker{user: userID, question: question})
}

// AskerFrom returns what WithAsker put in ctx ("" when nothing).
func AskerFrom(ctx context.Context) (userID, question string) {
	a, _ := ctx.Value(askerKey{}).(asker)
	return a.user, a.question
}

// ThreadMessage is one earlier message of a thread, as the Slack edge reads
// it: mentions already turned into readable names.
type ThreadMessage struct {
	TS      string
	User    string // the author's user id ("" for some bot posts)
	Author  string // the author's display name
	BotID   string
	SubType string
	Text    string // readable text: <@U…> mentions are "@Name", the bot's own are removed
}

// Texts a Slack user sees while the AI employee works. Defined once: the
// router posts the placeholder, the worker replaces it and leaves it out of
// the thread history it gives the model.
const (
	TextThinking = "Thinking..."
)

// TextQueued is the placeholder when the answer will wait: for a worker,
// or for Slack's budget.
func TextQueued(wait time.Duration) string {
	s := int(math.Ceil(wait.Seconds()))
	switch {
	case s < 90:
		return fmt.Sprintf("Queued — about %d s", s)
	default:
		return fmt.Sprintf("Queued — about %d min", (s+30)/60)
	}
}

// IsPlaceholder reports whether a bot message's text is a placeholder.
func IsPlaceholder(text string) bool {
	text = strings.TrimSpace(text)
	return text == TextThinking || strings.HasPrefix(text, "Queued — about ")
}

// TSBefore reports whether Slack timestamp a ("1712345678.000100") is
// earlier than b.
func TSBefore(a, b string) bool {
	ai, af, _ := strings.Cut(a, ".")
	bi, bf, _ := strings.Cut(b, ".")
	if len(ai) != len(bi) {
		return len(ai) < len(bi)
	}
	if ai != bi {
		return ai < bi
	}
	for len(af) < len(bf) {
		af += "0"
	}
	for len(bf) < len(af) {
		bf += "0"
	}
	return af < bf
}
