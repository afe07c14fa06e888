package slacksim_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slackevents"

	"github.com/konstruct/konstruct/slacksim"
)

// Every envelope slacksim sends parses with slackevents into the expected type.
func TestPayloadFidelity(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t)
	api := apiClient(t, sim, ws)
	rc := dialRaw(t, sim, ws)
	rc.read(time.Second) // hello
	user := ws.UserIDs[0]

	nextInner := func() (slackevents.EventsAPIEvent, *slackevents.EventsAPICallbackEvent) {
		t.Helper()
		env := rc.read(2 * time.Second)
		if env["type"] != "events_api" || env["accepts_response_payload"] != false || env["retry_attempt"] != 0.0 {
			t.Fatalf("envelope %v", env)
		}
		rc.ack(env["envelope_id"].(string))
		raw, _ := json.Marshal(env["payload"])
		ev, err := slackevents.ParseEvent(raw, slackevents.OptionNoVerifyToken())
		if err != nil {
			t.Fatalf("parse %s: %v", raw, err)
		}
		cb := ev.Data.(*slackevents.EventsAPICallbackEvent)
		if ev.Type != slackevents.CallbackEvent || ev.TeamID != ws.TeamID || ev.APIAppID != ws.AppID ||
			!strings.HasPrefix(cb.EventID, "Ev") || cb.EventTime == 0 {
			t.Fatalf("outer event %+v %+v", ev, cb)
		}
		var auths struct {
			Authorizations []struct {
				TeamID string `json:"team_id"`
				UserID string `json:"user_id"`
				IsBot  bool   `json:"is_bot"`
			} `json:"authorizations"`
		}
		_ = json.Unmarshal(raw, &auths)
		if len(auths.Authorizations) != 1 || auths.Authorizations[0].UserID != ws.BotUserID || !auths.Authorizations[0].IsBot {
			t.Fatalf("authorizations %+v", auths)
		}
		return ev, cb
	}
	msgEvent := func() *slackevents.MessageEvent {
		t.Helper()
		ev, _ := nextInner()
		m, ok := ev.InnerEvent.Data.(*slackevents.MessageEvent)
		if !ok {
			t.Fatalf("inner %T, want MessageEvent", ev.InnerEvent.Data)
		}
		return m
	}

	// A DM: message with channel_type im in a D… channel, no app_mention.
	dmTS, _ := sim.DM(ws.TeamID, user, "hi in private", "")
	if m := msgEvent(); m.ChannelType != "im" || !strings.HasPrefix(m.Channel, "D") || m.TimeStamp != dmTS || m.User != user {
		t.Errorf("dm = %+v", m)
	}
	if got := sim.DMChannel(ws.TeamID, user); !strings.HasPrefix(got, "D") {
		t.Errorf("DMChannel = %q", got)
	}

	// A thread reply mentioning the bot: app_mention and message, both with thread_ts.
	root, _ := sim.Post(ws.TeamID, ws.GeneralChannelID, user, "root", "")
	msgEvent()
	reply, _ := sim.Mention(ws.TeamID, ws.GeneralChannelID, user, "in thread", root)
	ev, _ := nextInner()
	if am, ok := ev.InnerEvent.Data.(*slackevents.AppMentionEvent); !ok || am.ThreadTimeStamp != root || am.TimeStamp != reply {
		t.Errorf("thread app_mention = %#v", ev.InnerEvent.Data)
	}
	if m := msgEvent(); m.ThreadTimeStamp != root || m.ChannelType != "channel" {
		t.Errorf("thread message = %+v", m)
	}

	// Another bot.
	sim.PostAsBot(ws.TeamID, ws.GeneralChannelID, "B0OTHER", "beep", "")
	if m := msgEvent(); m.SubType != "bot_message" || m.BotID != "B0OTHER" {
		t.Errorf("bot_message = %+v", m)
	}

	// Edit and delete.
	if err := sim.Edit(ws.TeamID, ws.GeneralChannelID, root, "root (edited)"); err != nil {
		t.Fatal(err)
	}
	if m := msgEvent(); m.SubType != "message_changed" || m.Message == nil || m.Message.Text != "root (edited)" || m.PreviousMessage.Text != "root" {
		t.Errorf("message_changed = %+v", m)
	}
	if err := sim.Delete(ws.TeamID, ws.GeneralChannelID, reply); err != nil {
		t.Fatal(err)
	}
	if m := msgEvent(); m.SubType != "message_deleted" || m.DeletedTimeStamp != reply {
		t.Errorf("message_deleted = %+v", m)
	}

	// The bot's own post comes back with bot_id, like Slack.
	ctx := ctxT(t, 5*time.Second)
	_, ts, err := api.PostMessageContext(ctx, ws.GeneralChannelID, slack.MsgOptionText("from the bot", false), slack.MsgOptionTS(root))
	if err != nil {
		t.Fatal(err)
	}
	if m := msgEvent(); m.BotID != ws.BotID || m.User != ws.BotUserID || m.TimeStamp != ts || m.ThreadTimeStamp != root {
		t.Errorf("echo = %+v", m)
	}
	if _, _, _, err := api.UpdateMessageContext(ctx, ws.GeneralChannelID, ts, slack.MsgOptionText("edited by bot", false)); err != nil {
		t.Fatal(err)
	}
	if m := msgEvent(); m.SubType != "message_changed" || m.Message.BotID != ws.BotID {
		t.Errorf("bot edit echo = %+v", m)
	}
}

func TestStandaloneAndControlEndpoint(t *testing.T) {
	t.Parallel()
	vals, base := startStandalone(t)

	api := slack.New(vals["bot_token"], slack.OptionAPIURL(vals["api_url"]))
	auth, err := api.AuthTestContext(ctxT(t, 5*time.Second))
	if err != nil || auth.TeamID != vals["team_id"] {
		t.Fatalf("auth.test = %+v, %v", auth, err)
	}

	var posted struct {
		OK      bool   `json:"ok"`
		TS      string `json:"ts"`
		Channel string `json:"channel"`
	}
	body := `{"team":"` + vals["team_id"] + `","text":"hello from curl","kind":"mention"}`
	resp, err := http.Post(base+"_sim/post", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&posted)
	resp.Body.Close()
	if !posted.OK || posted.TS == "" || posted.Channel == "" {
		t.Fatalf("post = %+v", posted)
	}
	if _, _, err := api.PostMessageContext(ctxT(t, 5*time.Second), posted.Channel, slack.MsgOptionText("hi back", false), slack.MsgOptionTS(posted.TS)); err != nil {
		t.Fatal(err)
	}
	resp, err = http.Get(base + "_sim/thread?team=" + vals["team_id"] + "&channel=" + posted.Channel + "&ts=" + posted.TS)
	if err != nil {
		t.Fatal(err)
	}
	var view slacksim.ThreadView
	_ = json.NewDecoder(resp.Body).Decode(&view)
	resp.Body.Close()
	if len(view.Messages) != 2 || view.Messages[1].Text != "hi back" || !view.Messages[1].IsBot {
		t.Errorf("thread view = %+v", view)
	}
	resp, err = http.Get(base + "_sim/workspaces")
	if err != nil {
		t.Fatal(err)
	}
	var specs []slacksim.WorkspaceSpec
	_ = json.NewDecoder(resp.Body).Decode(&specs)
	resp.Body.Close()
	if len(specs) != 1 || specs[0].AppToken != vals["app_token"] {
		t.Errorf("workspaces = %+v", specs)
	}
}

// startStandalone runs RunStandalone until the test ends and returns the
// values it prints and the base URL of its endpoints.
func startStandalone(t *testing.T) (vals map[string]string, base string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = slacksim.RunStandalone(ctx, "127.0.0.1:0", pw)
		pw.Close()
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	vals = readStandalone(t, pr)
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	return vals, strings.TrimSuffix(vals["api_url"], "api/")
}

// readStandalone reads the four key=value lines RunStandalone prints.
func readStandalone(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	vals := map[string]string{}
	sc := bufio.NewScanner(r)
	var order bytes.Buffer
	for len(vals) < 4 && sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			t.Fatalf("unexpected line %q", sc.Text())
		}
		vals[k] = v
		order.WriteString(k + " ")
	}
	if order.String() != "api_url team_id app_token bot_token " {
		t.Fatalf("lines %q", order.String())
	}
	if !strings.HasSuffix(vals["api_url"], "/api/") || !strings.HasPrefix(vals["app_token"], "xapp-1-") || !strings.HasPrefix(vals["bot_token"], "xoxb-") || !strings.HasPrefix(vals["team_id"], "T") {
		t.Fatalf("values %v", vals)
	}
	return vals
}
