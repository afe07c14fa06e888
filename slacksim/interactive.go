package slacksim

import (
	"encoding/json"
	"errors"
	"fmt"
)

// ErrNoButton is ClickButton's error for a message without a button of
// that action id.
var ErrNoButton = errors.New("slacksim: no such button")

// ClickButton presses the button actionID of a message as userID, a
// person of the message's workspace, would: the app receives an
// interactive envelope (a block_actions payload, as Slack sends it) on one
// of its sockets, redelivered until it is acked, like an event.
func (s *Server) ClickButton(teamID, channelID, ts, userID, actionID string) error {
	return s.ClickButtonAs(teamID, channelID, ts, teamID, userID, actionID)
}

// ClickButtonAs is ClickButton by a person of another workspace
// (userTeamID) who sees the message: a guest in a channel shared between
// organisations. Slack delivers the click to the app that posted the
// message, and names the clicking person's workspace in the payload's
// team and user.team_id.
func (s *Server) ClickButtonAs(teamID, channelID, ts, userTeamID, userID, actionID string) error {
	s.mu.Lock()
	w, ch, m, err := s.driverMessageLocked(teamID, channelID, ts)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	btn, blockID, ok := findButton(m.blocks, actionID)
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("%w %q on message %s", ErrNoButton, actionID, ts)
	}
	name := userID
	if u := w.users[userID]; u != nil {
		name = u.Name
	} else if o := s.workspaces[userTeamID]; o != nil && o.users[userID] != nil {
		name = o.users[userID].Name
	}
	now := s.nextTSLocked()
	container := map[string]any{"type": "message", "message_ts": m.ts, "channel_id": ch.id, "is_ephemeral": false}
	if m.threadTS != "" {
		container["thread_ts"] = m.threadTS
	}
	action := map[string]any{
		"action_id": actionID, "block_id": blockID, "type": "button", "action_ts": now,
		"text": btn["text"], "value": btn["value"],
	}
	payload, _ := json.Marshal(map[string]any{
		"type":                  "block_actions",
		"user":                  map[string]any{"id": userID, "username": name, "name": name, "team_id": userTeamID},
		"api_app_id":            w.spec.AppID,
		"token":                 w.verif,
		"container":             container,
		"trigger_id":            digits(13) + "." + digits(13) + "." + randHex(16),
		"team":                  map[string]any{"id": userTeamID, "domain": slug(userTeamID)},
		"enterprise":            nil,
		"is_enterprise_install": false,
		"channel":               map[string]any{"id": ch.id, "name": cmpOr(ch.name, "directmessage")},
		"message":               s.messageJSONLocked(w, ch, m),
		"state":                 map[string]any{"values": map[string]any{}},
		"response_url":          s.baseURL + "actions/" + w.spec.TeamID + "/" + digits(13) + "/" + randHex(12),
		"actions":               []any{action},
	})
	appID := w.spec.AppID
	s.mu.Unlock()

	a := s.appByID(appID)
	if a == nil {
		return fmt.Errorf("%w %q: its app is gone", ErrUnknownTeam, teamID)
	}
	st := &EnvelopeStat{EnvelopeID: newUUID(), AppID: appID}
	s.statsMu.Lock()
	s.stats = append(s.stats, st)
	s.statsMu.Unlock()
	s.unacked.Add(1)
	a.deliver(&envelope{id: st.EnvelopeID, typ: "interactive", payload: payload, stat: st})
	return nil
}

// findButton finds the button element actionID in a message's blocks (in
// an actions block, or a section's accessory), with its block's id.
func findButton(blocks json.RawMessage, actionID string) (map[string]any, string, bool) {
	var bl []map[string]any
	if json.Unmarshal(blocks, &bl) != nil {
		return nil, "", false
	}
	for _, b := range bl {
		blockID, _ := b["block_id"].(string)
		var els []any
		switch b["type"] {
		case "actions":
			els, _ = b["elements"].([]any)
		case "section":
			if acc, ok := b["accessory"]; ok {
				els = []any{acc}
			}
		}
		for _, e := range els {
			el, _ := e.(map[string]any)
			if el["type"] == "button" && el["action_id"] == actionID {
				return el, blockID, true
			}
		}
	}
	return nil, "", false
}
