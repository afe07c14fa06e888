package konstruct

import "time"

// ChannelType is Slack's channel_type of a message event.
type ChannelType string

const (
	ChannelPublic  ChannelType = "channel"
	ChannelPrivate ChannelType = "group"
	ChannelIM      ChannelType = "im"
	ChannelMPIM    ChannelType = "mpim"
)

// Message is one human post, normalized from a Slack event, on its way from
// the gateway through the router to a worker.
type Message struct {
	TenantID     string      `json:"tenant_id,omitempty"`
	TeamID       string      `json:"team_id"`
	EnterpriseID string      `json:"enterprise_id,omitempty"`
	APIAppID     string      `json:"api_app_id,omitempty"`
	EventID      string      `json:"event_id"`
	EventType    string      `json:"event_type"` // app_mention | message
	EventTime    time.Time   `json:"event_time"`
	ChannelID    string      `json:"channel_id"`
	ChannelType  ChannelType `json:"channel_type,omitempty"`
	User         string      `json:"user"`
	BotID        string      `json:"bot_id,omitempty"`
	// BotUserID is the app's own bot user in this workspace (from the
	// payload's authorizations at normalization, confirmed by the router),
	// so a worker can tell its own messages and mentions apart without
	// asking Slack.
	BotUserID    string `json:"bot_user_id,omitempty"`
	SubType      string `json:"subtype,omitempty"`
	Text         string `json:"text"`
	TS           string `json:"ts"`
	ThreadTS     string `json:"thread_ts,omitempty"`
	IsDM         bool   `json:"is_dm"`
	IsMention    bool   `json:"is_mention"`
	RetryAttempt int    `json:"retry_attempt,omitempty"`
	// Action is set for a click on one of the bot's buttons (an
	// interactive envelope): the record is a vote or a stop, not a post.
	Action *Action `json:"action,omitempty"`
	// ReceivedAt is when the gateway read the envelope (monotonic-free, for metrics).
	ReceivedAt time.Time `json:"received_at"`
	// TraceParent is the W3C traceparent of the message's trace (tracing
	// on): the gateway's span in the record, the router's in the reply job.
	TraceParent string `json:"traceparent,omitempty"`
}

// Post is the post's identity (Post), which the app_mention and message
// twins of one post, Slack's retries and every process share. The tenant is
// known once the router has resolved it.
func (m *Message) Post() Post {
	return Post{TenantID: m.TenantID, TeamID: m.TeamID, ChannelID: m.ChannelID, TS: m.TS}
}

// ReplyThreadTS is the thread the answer belongs in: the event's thread_ts,
// else its own ts (a top-level post starts a thread).
func (m *Message) ReplyThreadTS() string {
	if m.ThreadTS != "" {
		return m.ThreadTS
	}
	return m.TS
}

// InThread reports whether the post is a reply inside an existing thread.
func (m *Message) InThread() bool { return m.ThreadTS != "" && m.ThreadTS != m.TS }

// Tenant is one customer of an install: its own Slack app(s), agent and limits.
type Tenant struct {
	ID        string    `json:"id"`
	Slug      string    `json:"slug"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Agent is the persona a tenant configured for its AI employee.
type Agent struct {
	ID           string    `json:"id"`
	TenantID     string    `json:"tenant_id"`
	Name         string    `json:"name"`
	Role         string    `json:"role"`
	Persona      string    `json:"persona"`
	Instructions string    `json:"instructions,omitempty"`
	Model        string    `json:"model,omitempty"`
	Active       bool      `json:"active"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	// Providers are the LLM providers (llm.providers names) the agent may
	// use, in the order they are tried; empty means every configured one.
	Providers []string `json:"providers,omitempty"`
}

// WorkspaceStatus says whether the gateway should hold sockets for a workspace.
type WorkspaceStatus string

const (
	WorkspaceActive  WorkspaceStatus = "active"
	WorkspaceRevoked WorkspaceStatus = "revoked" // Slack said the token is no longer valid
	WorkspaceRemoved WorkspaceStatus = "removed"
)

// Workspace is a Slack workspace (team) where a tenant's app is installed.
// AppToken and BotToken are plaintext only in memory; the store keeps them
// encrypted and nothing prints them.
type Workspace struct {
	ID           string          `json:"id"`
	TenantID     string          `json:"tenant_id"`
	TeamID       string          `json:"team_id"`
	TeamName     string          `json:"team_name,omitempty"`
	EnterpriseID string          `json:"enterprise_id,omitempty"`
	AppID        string          `json:"app_id,omitempty"`
	BotUserID    string          `json:"bot_user_id"`
	BotID        string          `json:"bot_id,omitempty"`
	AppToken     string          `json:"-"`
	BotToken     string          `json:"-"`
	Status       WorkspaceStatus `json:"status"`
	// Problem, when set, is why the workspace cannot be served and what to
	// do (its tokens do not decrypt): its tokens are empty, the gateway
	// skips it and reports it (log, /readyz, metrics), the others connect.
	Problem   string    `json:"problem,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Reply outcomes recorded in the replies table.
const (
	OutcomeAnswered = "answered"
	OutcomeError    = "error"
	OutcomeOrphaned = "orphaned" // resolved by the janitor after a crash
	OutcomeStopped  = "stopped"  // the asker pressed Stop: the partial answer stays, marked as stopped
	// OutcomeRefused is a question the AI employee did not put to the
	// model: over its tenant's token budget (Error "budget") or over a
	// rate limit (Error "rate_limited").
	OutcomeRefused = "refused"
)

// Reply is the record of one answer (or failure) in a thread.
type Reply struct {
	ID               string        `json:"id"`
	TenantID         string        `json:"tenant_id"`
	WorkspaceID      string        `json:"workspace_id,omitempty"`
	TeamID           string        `json:"team_id"`
	ChannelID        string        `json:"channel_id"`
	ThreadTS         string        `json:"thread_ts"`
	MessageTS        string        `json:"message_ts"` // the placeholder / answer message
	EventID          string        `json:"event_id"`
	Model            string        `json:"model"`
	Provider         string        `json:"provider"`
	PromptTokens     int           `json:"prompt_tokens"`
	CompletionTokens int           `json:"completion_tokens"`
	TimeToFirstToken time.Duration `json:"time_to_first_token"`
	Latency          time.Duration `json:"latency"`
	Outcome          string        `json:"outcome"`
	Error            string        `json:"error,omitempty"`
	// UserID is who asked, PostTS their message (the question), and
	// AnswerTime the time from the question's arrival to the final answer
	// in the thread (what the person waited).
	UserID     string        `json:"user_id,omitempty"`
	PostTS     string        `json:"post_ts,omitempty"`
	AnswerTime time.Duration `json:"answer_time,omitempty"`
	CreatedAt  time.Time     `json:"created_at"`
}
