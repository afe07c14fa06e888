package bot

import (
	"cmp"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/konstruct/konstruct"
)

// blockActions is the part of an interactive envelope's payload the
// gateway reads: a click on a button of a message (block_actions).
type blockActions struct {
	Type string `json:"type"`
	Team struct {
		ID string `json:"id"`
	} `json:"team"`
	Enterprise *struct {
		ID string `json:"id"`
	} `json:"enterprise"`
	APIAppID string `json:"api_app_id"`
	User     struct {
		ID     string `json:"id"`
		TeamID string `json:"team_id"`
	} `json:"user"`
	Channel *struct {
		ID string `json:"id"`
	} `json:"channel"`
	Container struct {
		Type        string `json:"type"`
		MessageTS   string `json:"message_ts"`
		ChannelID   string `json:"channel_id"`
		ThreadTS    string `json:"thread_ts"`
		IsEphemeral bool   `json:"is_ephemeral"`
	} `json:"container"`
	Message *struct {
		TS       string `json:"ts"`
		ThreadTS string `json:"thread_ts"`
	} `json:"message"`
	Actions []struct {
		ActionID string `json:"action_id"`
		Value    string `json:"value"`
		ActionTS string `json:"action_ts"`
	} `json:"actions"`
}

// NormalizeAction turns the payload of an interactive envelope into a
// konstruct.Message carrying the Action: a click on one of the bot's own
// buttons (konstruct.ActionVoteUp, ActionVoteDown, ActionStop) on a
// message. Anything else (other interactions, shortcuts, modals, buttons
// that are not ours) gives ErrNotMessage; a payload that does not decode
// gives an EINVALID error. It never panics.
func NormalizeAction(payload []byte, receivedAt time.Time) (konstruct.Message, error) {
	var p blockActions
	if err := json.Unmarshal(payload, &p); err != nil {
		return konstruct.Message{}, &konstruct.Error{Code: konstruct.EINVALID, Message: "malformed interactive payload", Err: err}
	}
	if p.Type != "block_actions" || p.Container.Type != "message" || p.Container.IsEphemeral || len(p.Actions) == 0 {
		return konstruct.Message{}, ErrNotMessage
	}
	a := p.Actions[0]
	switch a.ActionID {
	case konstruct.ActionVoteUp, konstruct.ActionVoteDown, konstruct.ActionStop:
	default:
		return konstruct.Message{}, ErrNotMessage
	}
	channel := p.Container.ChannelID
	if channel == "" && p.Channel != nil {
		channel = p.Channel.ID
	}
	ts, thread := p.Container.MessageTS, p.Container.ThreadTS
	if p.Message != nil {
		ts = cmp.Or(ts, p.Message.TS)
		thread = cmp.Or(thread, p.Message.ThreadTS)
	}
	if p.Team.ID == "" || p.User.ID == "" || channel == "" || ts == "" {
		return konstruct.Message{}, konstruct.Errorf(konstruct.EINVALID, "block_actions without team, user, channel or message")
	}
	m := konstruct.Message{
		TeamID:     p.Team.ID,
		APIAppID:   p.APIAppID,
		EventID:    "click:" + cmp.Or(a.ActionTS, ts) + ":" + p.User.ID,
		EventType:  p.Type,
		ChannelID:  channel,
		User:       p.User.ID,
		TS:         ts,
		ThreadTS:   thread,
		IsDM:       strings.HasPrefix(channel, "D"),
		ReceivedAt: receivedAt,
		Action:     &konstruct.Action{ActionID: a.ActionID, Value: a.Value, UserTeamID: p.User.TeamID},
	}
	if p.Enterprise != nil {
		m.EnterpriseID = p.Enterprise.ID
	}
	if m.IsDM {
		m.ChannelType = konstruct.ChannelIM
	}
	if at, ok := slackTime(a.ActionTS); ok {
		m.EventTime = at.Truncate(time.Second)
		m.Action.At = at
	} else {
		m.Action.At = receivedAt
	}
	return m, nil
}

// slackTime reads a Slack timestamp ("1712345678.123456") to the
// microsecond.
func slackTime(ts string) (time.Time, bool) {
	sec, frac, _ := strings.Cut(ts, ".")
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, false
	}
	var us int64
	if frac != "" {
		frac = (frac + "000000")[:6]
		us, _ = strconv.ParseInt(frac, 10, 64)
	}
	return time.Unix(n, us*1000).UTC(), true
}
