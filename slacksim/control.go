package slacksim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// actor is who does something through the control endpoint, where: empty
// fields default to the first workspace, its #general and its first user.
type actor struct {
	Team    string `json:"team"`
	Channel string `json:"channel"`
	User    string `json:"user"`
}

// postRequest is the body of POST /_sim/post.
type postRequest struct {
	actor
	Text     string `json:"text"`
	ThreadTS string `json:"thread_ts"`
	Kind     string `json:"kind"` // mention (default) | message | dm
}

// clickRequest is the body of POST /_sim/click: a person presses a button
// of a message (ClickButtonAs).
type clickRequest struct {
	actor
	TS       string `json:"ts"`
	UserTeam string `json:"user_team"` // the clicking person's workspace (default: team)
	ActionID string `json:"action_id"`
}

// readActorRequest decodes the JSON body of a control POST into req and
// fills its actor's defaults; it answers the error itself and returns
// false when there is one.
func (s *Server) readActorRequest(w http.ResponseWriter, r *http.Request, req any, a *actor) bool {
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"ok": false, "error": "POST only"})
		return false
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"ok": false, "error": fmt.Sprintf("decode body: %v", err)})
		return false
	}
	a.Team, a.Channel = s.defaults(a.Team, a.Channel)
	if a.User == "" {
		a.User = s.defaultUser(a.Team)
	}
	return true
}

func (s *Server) handleControl(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, err error) {
		writeJSON(w, status, map[string]any{"ok": false, "error": err.Error()})
	}
	switch r.URL.Path {
	case "/_sim/workspaces":
		writeJSON(w, http.StatusOK, s.Workspaces())
	case "/_sim/thread":
		q := r.URL.Query()
		team, channel := s.defaults(q.Get("team"), q.Get("channel"))
		writeJSON(w, http.StatusOK, s.Thread(team, channel, q.Get("ts")))
	case "/_sim/post":
		var req postRequest
		if !s.readActorRequest(w, r, &req, &req.actor) {
			return
		}
		var (
			ts  string
			err error
		)
		switch req.Kind {
		case "", "mention":
			ts, err = s.Mention(req.Team, req.Channel, req.User, req.Text, req.ThreadTS)
		case "message":
			ts, err = s.Post(req.Team, req.Channel, req.User, req.Text, req.ThreadTS)
		case "dm":
			ts, err = s.DM(req.Team, req.User, req.Text, req.ThreadTS)
			req.Channel = s.DMChannel(req.Team, req.User)
		default:
			err = fmt.Errorf("unknown kind %q (mention, message, dm)", req.Kind)
		}
		if err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "ts": ts, "team": req.Team, "channel": req.Channel})
	case "/_sim/click":
		var req clickRequest
		if !s.readActorRequest(w, r, &req, &req.actor) {
			return
		}
		if err := s.ClickButtonAs(req.Team, req.Channel, req.TS, cmpOr(req.UserTeam, req.Team), req.User, req.ActionID); err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	case "/_sim/disconnect":
		q := r.URL.Query()
		reason := q.Get("reason")
		if reason == "" {
			reason = "refresh_requested"
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "sockets": s.Disconnect(q.Get("app"), reason)})
	default:
		http.NotFound(w, r)
	}
}

// defaults fills the first workspace and its #general when team/channel are empty.
func (s *Server) defaults(team, channel string) (string, string) {
	if team != "" && channel != "" {
		return team, channel
	}
	ws := s.Workspaces()
	for _, w := range ws {
		if team == "" || w.TeamID == team {
			return w.TeamID, cmpOr(channel, w.GeneralChannelID)
		}
	}
	return team, channel
}

func (s *Server) defaultUser(team string) string {
	for _, w := range s.Workspaces() {
		if w.TeamID == team && len(w.UserIDs) > 0 {
			return w.UserIDs[0]
		}
	}
	return "U0SIMHUMAN"
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// RunStandalone starts a server on addr with one seeded workspace, prints
// api_url=…, team_id=…, app_token=…, bot_token=… (one per line) to stdout and
// serves until ctx ends.
func RunStandalone(ctx context.Context, addr string, stdout io.Writer) error {
	s := New(WithSeed(true))
	if err := s.Start(addr); err != nil {
		return fmt.Errorf("start slacksim: %w", err)
	}
	defer s.Close()
	ws := s.Workspaces()[0]
	if _, err := fmt.Fprintf(stdout, "api_url=%s\nteam_id=%s\napp_token=%s\nbot_token=%s\n",
		s.APIURL(), ws.TeamID, ws.AppToken, ws.BotToken); err != nil {
		return fmt.Errorf("print workspace: %w", err)
	}
	<-ctx.Done()
	return nil
}
