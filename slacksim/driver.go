package slacksim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Driver errors.
var (
	ErrUnknownTeam    = errors.New("slacksim: unknown team")
	ErrUnknownChannel = errors.New("slacksim: channel_not_found")
	ErrUnknownMessage = errors.New("slacksim: message_not_found")
)

// pendingEvent is an event built under s.mu and emitted after it is released.
type pendingEvent struct {
	spec  WorkspaceSpec
	verif string
	ev    map[string]any
}

func (s *Server) emitAll(evs []pendingEvent) {
	for _, e := range evs {
		s.emit(e.spec, e.verif, e.ev)
	}
}

// driverChannelLocked finds (or, for C…/G… ids, creates) a channel for a driver.
func (s *Server) driverChannelLocked(teamID, channelID string) (*workspace, *channel, error) {
	w := s.workspaces[teamID]
	if w == nil {
		return nil, nil, fmt.Errorf("%w %q", ErrUnknownTeam, teamID)
	}
	ch := w.channels[channelID]
	if ch == nil {
		if channelID == "" || channelID[0] != 'C' && channelID[0] != 'G' {
			return nil, nil, fmt.Errorf("%w: %q", ErrUnknownChannel, channelID)
		}
		ch = newChannel(channelID, strings.ToLower(channelID), channelID[0] == 'G')
		w.channels[channelID] = ch
	}
	return w, ch, nil
}

// driverMessageLocked finds a live message for a driver, in a channel as
// driverChannelLocked finds it.
func (s *Server) driverMessageLocked(teamID, channelID, ts string) (*workspace, *channel, *message, error) {
	w, ch, err := s.driverChannelLocked(teamID, channelID)
	if err != nil {
		return nil, nil, nil, err
	}
	m := ch.msgs[ts]
	if m == nil || m.deleted {
		return nil, nil, nil, fmt.Errorf("%w: %s", ErrUnknownMessage, ts)
	}
	return w, ch, m, nil
}

// richText is the rich_text block Slack clients attach to human messages.
func richText(text string) json.RawMessage {
	b, _ := json.Marshal([]map[string]any{{
		"type": "rich_text", "block_id": randHex(3),
		"elements": []map[string]any{{
			"type":     "rich_text_section",
			"elements": []map[string]any{{"type": "text", "text": text}},
		}},
	}})
	return b
}

// humanPost stores a human message and builds its events.
func (s *Server) humanPost(teamID, channelID, userID, text, threadTS string, dm bool) (string, error) {
	s.mu.Lock()
	var (
		w   *workspace
		ch  *channel
		err error
	)
	if dm {
		w = s.workspaces[teamID]
		if w == nil {
			s.mu.Unlock()
			return "", fmt.Errorf("%w %q", ErrUnknownTeam, teamID)
		}
		ch = w.dmLocked(userID)
	} else if w, ch, err = s.driverChannelLocked(teamID, channelID); err != nil {
		s.mu.Unlock()
		return "", err
	}
	w.ensureUserLocked(userID)
	var root *message
	threadTS = ch.threadRoot(threadTS)
	if threadTS != "" {
		root = ch.msgs[threadTS]
		if root == nil || root.deleted {
			s.mu.Unlock()
			return "", fmt.Errorf("%w: thread %s", ErrUnknownMessage, threadTS)
		}
	}
	m := &message{ts: s.nextTSLocked(), threadTS: threadTS, user: userID, text: text, blocks: richText(text)}
	ch.msgs[m.ts] = m
	if root != nil {
		root.replies = append(root.replies, m.ts)
		if root.replyUsers == nil {
			root.replyUsers = map[string]bool{}
		}
		root.replyUsers[userID] = true
	}
	s.notifyLocked()

	base := func(typ string) map[string]any {
		ev := map[string]any{
			"type": typ, "user": userID, "text": text, "ts": m.ts, "event_ts": m.ts,
			"client_msg_id": newUUID(), "team": teamID, "channel": ch.id, "blocks": m.blocks,
		}
		if threadTS != "" {
			ev["thread_ts"] = threadTS
			ev["parent_user_id"] = root.user
		}
		return ev
	}
	var evs []pendingEvent
	if !ch.im && strings.Contains(text, "<@"+w.spec.BotUserID+">") {
		evs = append(evs, pendingEvent{w.spec, w.verif, base("app_mention")})
	}
	msg := base("message")
	msg["channel_type"] = ch.channelType()
	evs = append(evs, pendingEvent{w.spec, w.verif, msg})
	s.mu.Unlock()
	s.emitAll(evs)
	return m.ts, nil
}

// Mention posts text from userID in a channel (or its thread) mentioning the
// bot; "<@BOTUSER> " is prepended when text lacks it. The app receives an
// app_mention and a message event (channel_type "channel"), with different event ids.
func (s *Server) Mention(teamID, channelID, userID, text, threadTS string) (string, error) {
	s.mu.Lock()
	w := s.workspaces[teamID]
	s.mu.Unlock()
	if w == nil {
		return "", fmt.Errorf("%w %q", ErrUnknownTeam, teamID)
	}
	if tag := "<@" + w.spec.BotUserID + ">"; !strings.Contains(text, tag) {
		text = tag + " " + text
	}
	return s.humanPost(teamID, channelID, userID, text, threadTS, false)
}

// Post posts a plain human message in a channel or thread (message event only,
// plus app_mention if the text happens to mention the bot).
func (s *Server) Post(teamID, channelID, userID, text, threadTS string) (string, error) {
	return s.humanPost(teamID, channelID, userID, text, threadTS, false)
}

// DM sends the bot a direct message (channel_type "im", channel id D…); see DMChannel.
func (s *Server) DM(teamID, userID, text, threadTS string) (string, error) {
	return s.humanPost(teamID, "", userID, text, threadTS, true)
}

// Edit changes a message's text as its author would; the app receives a
// message_changed event.
func (s *Server) Edit(teamID, channelID, ts, newText string) error {
	s.mu.Lock()
	w, ch, m, err := s.driverMessageLocked(teamID, channelID, ts)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	prev := s.messageJSONLocked(w, ch, m)
	now := s.nextTSLocked()
	m.text = newText
	if !m.isBot && m.subtype == "" {
		m.blocks = richText(newText)
	}
	m.edited = &edited{User: m.user, TS: now}
	m.updates++
	s.notifyLocked()
	ev := changedEvent(ch, s.messageJSONLocked(w, ch, m), prev, now)
	spec, verif := w.spec, w.verif
	s.mu.Unlock()
	s.emit(spec, verif, ev)
	return nil
}

func changedEvent(ch *channel, msg, prev map[string]any, now string) map[string]any {
	return map[string]any{
		"type": "message", "subtype": "message_changed", "hidden": true,
		"message": msg, "previous_message": prev,
		"channel": ch.id, "channel_type": ch.channelType(), "ts": now, "event_ts": now,
	}
}

// Delete removes a message as its author would; the app receives message_deleted.
func (s *Server) Delete(teamID, channelID, ts string) error {
	s.mu.Lock()
	w, ch, m, err := s.driverMessageLocked(teamID, channelID, ts)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	prev := s.messageJSONLocked(w, ch, m)
	m.deleted = true
	now := s.nextTSLocked()
	s.notifyLocked()
	ev := map[string]any{
		"type": "message", "subtype": "message_deleted", "hidden": true,
		"deleted_ts": ts, "previous_message": prev,
		"channel": ch.id, "channel_type": ch.channelType(), "ts": now, "event_ts": now,
	}
	if m.threadTS != "" {
		ev["thread_ts"] = m.threadTS
	}
	spec, verif := w.spec, w.verif
	s.mu.Unlock()
	s.emit(spec, verif, ev)
	return nil
}

// PostAsBot posts as another bot (integration): a message event with subtype
// bot_message and bot_id.
func (s *Server) PostAsBot(teamID, channelID, botID, text, threadTS string) (string, error) {
	s.mu.Lock()
	w, ch, err := s.driverChannelLocked(teamID, channelID)
	if err != nil {
		s.mu.Unlock()
		return "", err
	}
	var root *message
	threadTS = ch.threadRoot(threadTS)
	if threadTS != "" {
		if root = ch.msgs[threadTS]; root == nil || root.deleted {
			s.mu.Unlock()
			return "", fmt.Errorf("%w: thread %s", ErrUnknownMessage, threadTS)
		}
	}
	m := &message{ts: s.nextTSLocked(), threadTS: threadTS, botID: botID, subtype: "bot_message", username: "bot " + botID, text: text}
	ch.msgs[m.ts] = m
	if root != nil {
		root.replies = append(root.replies, m.ts)
	}
	s.notifyLocked()
	ev := map[string]any{
		"type": "message", "subtype": "bot_message", "text": text, "ts": m.ts, "event_ts": m.ts,
		"bot_id": botID, "username": m.username, "channel": ch.id, "channel_type": ch.channelType(),
	}
	if threadTS != "" {
		ev["thread_ts"] = threadTS
	}
	spec, verif := w.spec, w.verif
	s.mu.Unlock()
	s.emit(spec, verif, ev)
	return m.ts, nil
}

// echoLocked builds the message event Slack sends the app for its own post.
func (s *Server) echoLocked(w *workspace, ch *channel, m *message) []pendingEvent {
	if !s.botEcho {
		return nil
	}
	ev := s.messageJSONLocked(w, ch, m)
	ev["channel"] = ch.id
	ev["channel_type"] = ch.channelType()
	ev["event_ts"] = m.ts
	return []pendingEvent{{w.spec, w.verif, ev}}
}

// ThreadView is what a person sees in a thread.
type ThreadView struct {
	Messages   []ViewMessage       `json:"messages"`
	Ephemerals map[string][]string `json:"ephemerals"` // user → texts posted to them in this thread
	Status     string              `json:"status"`     // current assistant status ("" = none)
}

// ViewMessage is one visible message: for bot messages, the final text after
// updates and streams.
type ViewMessage struct {
	TS        string          `json:"ts"`
	User      string          `json:"user,omitempty"`
	BotID     string          `json:"bot_id,omitempty"`
	Text      string          `json:"text"`
	Blocks    json.RawMessage `json:"blocks,omitempty"`
	IsBot     bool            `json:"is_bot"`
	Updates   int             `json:"updates"`
	Streaming bool            `json:"streaming"`
}

// Replies returns the messages after the root.
func (v ThreadView) Replies() []ViewMessage {
	if len(v.Messages) == 0 {
		return nil
	}
	return v.Messages[1:]
}

// BotReplies returns the messages the app posted in the thread.
func (v ThreadView) BotReplies() []ViewMessage {
	var out []ViewMessage
	for _, m := range v.Messages {
		if m.IsBot {
			out = append(out, m)
		}
	}
	return out
}

// Thread returns what a person sees in a thread: root and replies in order
// (deleted ones gone), ephemerals per user, the assistant status.
func (s *Server) Thread(teamID, channelID, threadTS string) ThreadView {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.threadLocked(teamID, channelID, threadTS)
}

func (s *Server) threadLocked(teamID, channelID, threadTS string) ThreadView {
	v := ThreadView{Ephemerals: map[string][]string{}}
	w := s.workspaces[teamID]
	if w == nil {
		return v
	}
	ch := w.channels[channelID]
	if ch == nil {
		return v
	}
	for _, m := range ch.threadLocked(threadTS) {
		v.Messages = append(v.Messages, ViewMessage{
			TS: m.ts, User: m.user, BotID: m.botID, Text: m.text, Blocks: m.blocks,
			IsBot: m.isBot || m.subtype == "bot_message", Updates: m.updates, Streaming: m.streaming,
		})
	}
	for u, texts := range ch.ephem[threadTS] {
		v.Ephemerals[u] = append([]string(nil), texts...)
	}
	if st, ok := ch.status[threadTS]; ok && time.Since(st.at) < statusTTL {
		v.Status = st.text
	}
	sort.SliceStable(v.Messages, func(i, j int) bool { return v.Messages[i].TS < v.Messages[j].TS })
	return v
}

// WaitThread returns the thread view once cond holds, or the last view and
// ctx's error when ctx ends first.
func (s *Server) WaitThread(ctx context.Context, teamID, channelID, threadTS string, cond func(ThreadView) bool) (ThreadView, error) {
	for {
		s.mu.Lock()
		v := s.threadLocked(teamID, channelID, threadTS)
		changed := s.changed
		s.mu.Unlock()
		if cond(v) {
			return v, nil
		}
		// The status expires by time, not by a change: re-check now and then.
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, fmt.Errorf("wait thread %s: %w", threadTS, ctx.Err())
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}
