package bot

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/metrics"
	"github.com/konstruct/konstruct/slacksim"
)

// blockButtons are the buttons of a message's actions blocks.
func blockButtons(t *testing.T, raw json.RawMessage) []konstruct.Button {
	t.Helper()
	var blocks []struct {
		Type     string `json:"type"`
		Elements []struct {
			Type     string `json:"type"`
			ActionID string `json:"action_id"`
			Value    string `json:"value"`
			Text     struct {
				Text string `json:"text"`
			} `json:"text"`
		} `json:"elements"`
	}
	if err := json.Unmarshal(raw, &blocks); err != nil {
		t.Fatal(err)
	}
	var out []konstruct.Button
	for _, b := range blocks {
		if b.Type != "actions" {
			continue
		}
		for _, e := range b.Elements {
			if e.Type == "button" {
				out = append(out, konstruct.Button{ActionID: e.ActionID, Text: e.Text.Text, Value: e.Value})
			}
		}
	}
	return out
}

// The bot's buttons reach Slack as they are, under a markdown block made
// inert: model text is untrusted, the buttons are the product's own. An
// update without buttons takes them away (the final answer replaces Stop).
func TestWebButtonsAreOursModelTextIsInert(t *testing.T) {
	t.Parallel()
	web, sim, ws := webOnSim(t)
	asker := ws.UserIDs[0]
	ctx := konstruct.WithAsker(context.Background(), asker, "hi")
	root, err := sim.Mention(ws.TeamID, ws.GeneralChannelID, asker, "hi", "")
	if err != nil {
		t.Fatal(err)
	}
	ref := konstruct.AnswerRef{TeamID: ws.TeamID, ChannelID: ws.GeneralChannelID, TS: root, Asker: asker}.String()
	buttons := []konstruct.Button{{ActionID: konstruct.ActionVoteUp, Text: "👍", Value: ref}, {ActionID: konstruct.ActionVoteDown, Text: "👎", Value: ref}}
	// The model tries markup and to pass for a button.
	answer := `Sure. <!channel> {"type":"actions","elements":[{"type":"button","action_id":"konstruct_stop"}]} <@U999>`
	ts, err := web.Post(ctx, ws.TeamID, ws.GeneralChannelID, root, konstruct.Content{Markdown: "…"})
	if err != nil {
		t.Fatal(err)
	}
	if err := web.Update(ctx, ws.TeamID, ws.GeneralChannelID, ts, konstruct.Content{Markdown: answer, Buttons: buttons}); err != nil {
		t.Fatal(err)
	}
	got := messageAt(sim, ws, root, ts)
	if bad := activeMarkup(blockMarkdown(t, got.Blocks), allowance{asker: true}); bad != "" {
		t.Errorf("markdown block has %s", bad)
	}
	if b := blockButtons(t, got.Blocks); len(b) != 2 || b[0] != buttons[0] || b[1] != buttons[1] {
		t.Fatalf("buttons %+v, want exactly %+v", b, buttons)
	}
	if err := web.Update(ctx, ws.TeamID, ws.GeneralChannelID, ts, konstruct.Content{Markdown: "final"}); err != nil {
		t.Fatal(err)
	}
	if b := blockButtons(t, messageAt(sim, ws, root, ts).Blocks); len(b) != 0 {
		t.Fatalf("buttons after an update without them: %+v", b)
	}
}

func messageAt(sim *slacksim.Server, ws slacksim.WorkspaceSpec, root, ts string) slacksim.ViewMessage {
	for _, m := range sim.Thread(ws.TeamID, ws.GeneralChannelID, root).Messages {
		if m.TS == ts {
			return m
		}
	}
	return slacksim.ViewMessage{}
}

// A click on one of the bot's buttons goes through the intake like a
// post: recorded, and only then acked; a click on a button that is not the
// bot's is acked and dropped.
func TestClickRecordedThenAcked(t *testing.T) {
	t.Parallel()
	sim, ws, src := oneWorkspace(t, slacksim.WithAckTimeout(10*time.Second), slacksim.WithBotEcho(false))
	mx := metrics.New()
	rec := newRecorder()
	acks := watchAcks(sim, rec)
	m := startManager(t, sim, ManagerConfig{Source: src.list, Metrics: mx, Recorder: rec, RecordTimeout: 10 * time.Second})
	waitFor(t, 5*time.Second, "sockets", func() bool { return sim.Connections(ws.AppID) == 2 })

	web := NewWeb(WebConfig{APIURL: sim.APIURL(), HTTPClient: simClient(t)})
	web.Set([]konstruct.Workspace{workspaceOf(ws)})
	asker := ws.UserIDs[0]
	root, err := sim.Mention(ws.TeamID, ws.GeneralChannelID, asker, "hi", "")
	if err != nil {
		t.Fatal(err)
	}
	next(t, m, 5*time.Second) // the mention's app_mention and message events
	next(t, m, 5*time.Second)
	ref := konstruct.AnswerRef{TeamID: ws.TeamID, ChannelID: ws.GeneralChannelID, TS: root, Asker: asker}.String()
	ts, err := web.Post(context.Background(), ws.TeamID, ws.GeneralChannelID, root, konstruct.Content{Markdown: "Answer", Buttons: []konstruct.Button{
		{ActionID: konstruct.ActionVoteUp, Text: "👍", Value: ref}, {ActionID: "someone_elses", Text: "?", Value: "x"}}})
	if err != nil {
		t.Fatal(err)
	}

	rec.hold()
	if err := sim.ClickButton(ws.TeamID, ws.GeneralChannelID, ts, ws.UserIDs[1], konstruct.ActionVoteUp); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the click at the committer", func() bool { return rec.heldMessages() == 1 })
	if n := sim.Unacked(); n != 1 {
		t.Fatalf("%d unacked while its record is held, want the click's", n)
	}
	rec.release()
	got := next(t, m, 5*time.Second)
	if got.Action == nil || got.Action.ActionID != konstruct.ActionVoteUp || got.Action.Value != ref || got.Action.UserTeamID != ws.TeamID ||
		got.User != ws.UserIDs[1] || got.TeamID != ws.TeamID || got.ChannelID != ws.GeneralChannelID || got.TS != ts || got.ThreadTS != root {
		t.Fatalf("recorded click %+v (action %+v)", got, got.Action)
	}
	waitFor(t, 3*time.Second, "the click acked", func() bool { return sim.Unacked() == 0 })

	before := len(rec.recorded())
	if err := sim.ClickButton(ws.TeamID, ws.GeneralChannelID, ts, asker, "someone_elses"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "the foreign button's click acked", func() bool { return sim.Unacked() == 0 && acks.count() >= 3 })
	if n := len(rec.recorded()); n != before {
		t.Errorf("a click on a button not ours was recorded")
	}
	if n := value(mx.EnvelopesReceived.WithLabelValues("interactive")); n != 2 {
		t.Errorf("interactive envelopes counted %v, want 2", n)
	}
}

func TestNormalizeAction(t *testing.T) {
	t.Parallel()
	payload := func(mod func(map[string]any)) []byte {
		p := map[string]any{
			"type": "block_actions", "team": map[string]any{"id": "T1"}, "api_app_id": "A1",
			"user":      map[string]any{"id": "U1", "team_id": "T1"},
			"container": map[string]any{"type": "message", "message_ts": "2.2", "channel_id": "C1", "thread_ts": "1.1", "is_ephemeral": false},
			"channel":   map[string]any{"id": "C1"},
			"actions":   []any{map[string]any{"action_id": konstruct.ActionStop, "value": "T1:C1:1.1:U1", "action_ts": "1712345678.123"}},
		}
		if mod != nil {
			mod(p)
		}
		b, _ := json.Marshal(p)
		return b
	}
	now := time.Now()
	m, err := NormalizeAction(payload(nil), now)
	if err != nil {
		t.Fatal(err)
	}
	if m.TeamID != "T1" || m.User != "U1" || m.ChannelID != "C1" || m.TS != "2.2" || m.ThreadTS != "1.1" || m.EventType != "block_actions" ||
		m.Action == nil || m.Action.ActionID != konstruct.ActionStop || m.Action.Value != "T1:C1:1.1:U1" || m.Action.UserTeamID != "T1" ||
		m.EventTime.Unix() != 1712345678 || !m.ReceivedAt.Equal(now) || !strings.HasPrefix(m.EventID, "click:") {
		t.Fatalf("normalized %+v (action %+v)", m, m.Action)
	}
	for name, tc := range map[string]struct {
		p    []byte
		want error // ErrNotMessage, or nil for an EINVALID error
	}{
		"a modal":            {payload(func(p map[string]any) { p["type"] = "view_submission" }), ErrNotMessage},
		"not our button":     {payload(func(p map[string]any) { p["actions"] = []any{map[string]any{"action_id": "x"}} }), ErrNotMessage},
		"no action":          {payload(func(p map[string]any) { p["actions"] = []any{} }), ErrNotMessage},
		"an ephemeral":       {payload(func(p map[string]any) { p["container"].(map[string]any)["is_ephemeral"] = true }), ErrNotMessage},
		"no team":            {payload(func(p map[string]any) { p["team"] = map[string]any{} }), nil},
		"no user":            {payload(func(p map[string]any) { p["user"] = map[string]any{} }), nil},
		"not json":           {[]byte(`{"type":`), nil},
		"wrong type of team": {[]byte(`{"type":"block_actions","team":"T1"}`), nil},
	} {
		_, err := NormalizeAction(tc.p, now)
		switch {
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		case tc.want == nil && konstruct.ErrorCode(err) != konstruct.EINVALID:
			t.Errorf("%s: %v, want an EINVALID error", name, err)
		}
	}
	// A guest from another workspace: the payload says so.
	m, _ = NormalizeAction(payload(func(p map[string]any) {
		p["team"] = map[string]any{"id": "T2"}
		p["user"] = map[string]any{"id": "UB", "team_id": "T2"}
	}), now)
	if m.TeamID != "T2" || m.Action.UserTeamID != "T2" {
		t.Errorf("guest click %+v", m)
	}
}
