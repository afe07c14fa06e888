package konstruct

import "time"

import "strings"

// The buttons the bot puts on its answers (Block Kit action ids): 👍 and
// 👎 on every final answer, Stop while one streams.
const (
	ActionVoteUp   = "konstruct_vote_up"
	ActionVoteDown = "konstruct_vote_down"
	ActionStop     = "konstruct_stop"
)

// Button is a button the bot writes under a message. Its text and value
// are the bot's own, never the model's: the Slack edge writes them as they
// are, where model text is made inert.
type Button struct {
	ActionID string
	Text     string
	Value    string
}

// Action is a click on one of the bot's buttons: a Socket Mode
// interactive envelope (block_actions), recorded and routed like a post.
// The Message carrying it has the clicking person in User, the workspace
// the click came from in TeamID, and the message the button is on in
// ChannelID and TS.
type Action struct {
	ActionID string `json:"action_id"`
	// Value is the button's value: the AnswerRef the bot wrote.
	Value string `json:"value"`
	// UserTeamID is the clicking person's own workspace, when Slack says
	// (it differs from TeamID for a guest from another organisation).
	UserTeamID string `json:"user_team_id,omitempty"`
	// At is when the person clicked (Slack's action_ts): of two clicks
	// routed out of order, the later one holds.
	At time.Time `json:"at,omitzero"`
}

// AnswerRef is what an answer's buttons carry: the post the answer replies
// to (its workspace, channel and ts) and who asked. The tenant is never in
// it: a click's tenant is the one of the workspace it comes from.
type AnswerRef struct {
	TeamID, ChannelID, TS, Asker string
}

// String is team:channel:ts:asker, the buttons' value.
func (r AnswerRef) String() string {
	return r.TeamID + ":" + r.ChannelID + ":" + r.TS + ":" + r.Asker
}

// ParseAnswerRef reads a button value written by AnswerRef.String.
func ParseAnswerRef(s string) (AnswerRef, bool) {
	parts := strings.Split(s, ":")
	if len(parts) != 4 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return AnswerRef{}, false
	}
	return AnswerRef{TeamID: parts[0], ChannelID: parts[1], TS: parts[2], Asker: parts[3]}, true
}

// Vote is one person's 👍 or 👎 on the answer to a post: one per person
// per answer, changed by clicking the other button.
type Vote struct {
	Post Post   // the question the answer replies to
	User string // who voted
	Up   bool
	At   time.Time // when they clicked: a later click replaces an earlier vote, never the other way
}
