package bot

import (
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/konstruct/konstruct"
)

// ErrNotMessage is returned by Normalize for well-formed events that are not
// human posts the router decides on (reactions, joins of members, app home
// opens, token revocations…). The gateway acks and drops them.
var ErrNotMessage = errors.New("not a message event")

// eventCallback is the part of an events_api payload the gateway reads. It is
// decoded with encoding/json directly, not slackevents, so that an inner event
// slack-go does not know never costs a message.
type eventCallback struct {
	Type           string          `json:"type"`
	TeamID         string          `json:"team_id"`
	EnterpriseID   string          `json:"enterprise_id"`
	APIAppID       string          `json:"api_app_id"`
	EventID        string          `json:"event_id"`
	EventTime      json.Number     `json:"event_time"`
	Authorizations []authorization `json:"authorizations"`
	Event          json.RawMessage `json:"event"`
}

type authorization struct {
	TeamID string `json:"team_id"`
	UserID string `json:"user_id"`
	IsBot  bool   `json:"is_bot"`
}

type innerEvent struct {
	Type string `json:"type"`
	// tokens_revoked lists the revoked tokens' owners by kind.
	Tokens *struct {
		Bot []string `json:"bot"`
	} `json:"tokens"`
	SubType     string `json:"subtype"`
	Channel     string `json:"channel"`
	ChannelType string `json:"channel_type"`
	User        string `json:"user"`
	BotID       string `json:"bot_id"`
	Text        string `json:"text"`
	TS          string `json:"ts"`
	ThreadTS    string `json:"thread_ts"`
	// message_changed carries the new version of the post here.
	Message *struct {
		User     string `json:"user"`
		BotID    string `json:"bot_id"`
		Text     string `json:"text"`
		TS       string `json:"ts"`
		ThreadTS string `json:"thread_ts"`
	} `json:"message"`
}

// Normalize turns the payload of an events_api envelope (an event_callback)
// into a konstruct.Message. It handles app_mention and message events of
// every channel type, including subtypes (bot posts, edits, deletes, joins),
// which it keeps in SubType/BotID for the router to decide on. The bot's own
// mention is stripped from the text, the bot user being taken from the
// payload's authorizations. Other event types give ErrNotMessage; a payload
// that is not an event_callback gives an EINVALID error. It never panics.
func Normalize(payload []byte, receivedAt time.Time) (konstruct.Message, error) {
	return normalize(payload, receivedAt, nil)
}

// NormalizeFor is Normalize with the bot user id known (used when the
// payload carries no authorizations).
func NormalizeFor(payload []byte, receivedAt time.Time, botUserID string) (konstruct.Message, error) {
	return normalize(payload, receivedAt, func(string) string { return botUserID })
}

func normalize(payload []byte, receivedAt time.Time, botUser func(teamID string) string) (konstruct.Message, error) {
	var cb eventCallback
	if err := json.Unmarshal(payload, &cb); err != nil {
		return konstruct.Message{}, &konstruct.Error{Code: konstruct.EINVALID, Message: "malformed event payload", Err: err}
	}
	if cb.Type != "event_callback" {
		return konstruct.Message{}, konstruct.Errorf(konstruct.EINVALID, "payload type %q is not event_callback", cb.Type)
	}
	var ev innerEvent
	if err := json.Unmarshal(cb.Event, &ev); err != nil {
		return konstruct.Message{}, &konstruct.Error{Code: konstruct.EINVALID, Message: "malformed inner event", Err: err}
	}
	switch ev.Type {
	case "app_mention", "message":
	case "app_uninstalled":
		return konstruct.Message{}, &RevokedError{TeamID: cb.TeamID, Reason: ev.Type}
	case "tokens_revoked":
		if ev.Tokens != nil && len(ev.Tokens.Bot) > 0 {
			return konstruct.Message{}, &RevokedError{TeamID: cb.TeamID, Reason: ev.Type}
		}
		return konstruct.Message{}, ErrNotMessage // user tokens only: not ours
	default:
		return konstruct.Message{}, ErrNotMessage
	}
	if cb.TeamID == "" || ev.Channel == "" {
		return konstruct.Message{}, konstruct.Errorf(konstruct.EINVALID, "event without team or channel")
	}

	m := konstruct.Message{
		TeamID:       cb.TeamID,
		EnterpriseID: cb.EnterpriseID,
		APIAppID:     cb.APIAppID,
		EventID:      cb.EventID,
		EventType:    ev.Type,
		ChannelID:    ev.Channel,
		ChannelType:  konstruct.ChannelType(ev.ChannelType),
		User:         ev.User,
		BotID:        ev.BotID,
		SubType:      ev.SubType,
		Text:         ev.Text,
		TS:           ev.TS,
		ThreadTS:     ev.ThreadTS,
		IsDM:         ev.ChannelType == string(konstruct.ChannelIM),
		IsMention:    ev.Type == "app_mention",
		ReceivedAt:   receivedAt,
	}
	if sec, err := cb.EventTime.Int64(); err == nil && sec > 0 {
		m.EventTime = time.Unix(sec, 0).UTC()
	}
	if ev.SubType == "message_changed" && ev.Message != nil {
		// The edited post: who wrote it and where it lives. The router
		// drops edits; keeping the author makes the drop explainable.
		m.User, m.Text = ev.Message.User, ev.Message.Text
		if m.BotID == "" {
			m.BotID = ev.Message.BotID
		}
		if m.ThreadTS == "" {
			m.ThreadTS = ev.Message.ThreadTS
		}
	}
	if m.TS == "" {
		return konstruct.Message{}, konstruct.Errorf(konstruct.EINVALID, "event without ts")
	}

	bu := botUserFromAuthorizations(cb.Authorizations, cb.TeamID)
	if bu == "" && botUser != nil {
		bu = botUser(cb.TeamID)
	}
	if bu != "" {
		m.BotUserID = bu
		m.Text = StripMention(m.Text, bu)
	}
	return m, nil
}

// RevokedError is what Normalize gives for an event that says the app lost
// a workspace: app_uninstalled, or tokens_revoked naming the bot token.
type RevokedError struct {
	TeamID string
	Reason string // the event type
}

func (e *RevokedError) Error() string { return "workspace " + e.TeamID + ": " + e.Reason }

// botUserFromAuthorizations picks the bot user the event was delivered to:
// the bot authorization of the team, else any bot authorization.
func botUserFromAuthorizations(auths []authorization, teamID string) string {
	first := ""
	for _, a := range auths {
		if !a.IsBot || a.UserID == "" {
			continue
		}
		if a.TeamID == teamID {
			return a.UserID
		}
		if first == "" {
			first = a.UserID
		}
	}
	return first
}

// StripMention removes the mentions of userID (<@U123> and <@U123|name>)
// from text and tidies the spaces they leave behind. Other mentions stay.
func StripMention(text, userID string) string {
	if userID == "" || !strings.Contains(text, "<@"+userID) {
		return text
	}
	open := "<@" + userID
	var b strings.Builder
	b.Grow(len(text))
	rest := text
	for {
		i := strings.Index(rest, open)
		if i < 0 {
			b.WriteString(rest)
			break
		}
		after := rest[i+len(open):]
		end := -1
		switch {
		case strings.HasPrefix(after, ">"):
			end = 1
		case strings.HasPrefix(after, "|"):
			if j := strings.IndexByte(after, '>'); j >= 0 {
				end = j + 1
			}
		}
		if end < 0 {
			// <@U12345 is a prefix of another user's id, or unterminated.
			b.WriteString(rest[:i+len(open)])
			rest = after
			continue
		}
		b.WriteString(rest[:i])
		rest = after[end:]
	}
	return tidySpaces(b.String())
}

// tidySpaces trims the text and collapses runs of spaces left where a
// mention was, keeping newlines (they carry Markdown structure).
func tidySpaces(s string) string {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "  ") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	prevSpace := false
	for _, r := range s {
		if r == ' ' {
			if prevSpace {
				continue
			}
			prevSpace = true
		} else {
			prevSpace = false
		}
		b.WriteRune(r)
	}
	return b.String()
}
