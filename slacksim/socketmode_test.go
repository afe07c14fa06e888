package slacksim_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slackevents"
	"github.com/slack-go/slack/socketmode"

	"github.com/konstruct/konstruct/slacksim"
)

func TestSocketModeMentionAndAck(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t)
	var acked []slacksim.EnvelopeStat
	ackCh := make(chan slacksim.EnvelopeStat, 10)
	sim.OnAck(func(st slacksim.EnvelopeStat) { ackCh <- st })
	c := runSocketMode(t, sim, ws)
	c.next(t, 5*time.Second, socketmode.EventTypeHello)
	waitFor(t, 2*time.Second, func() bool { return sim.Connections(ws.AppID) == 1 })

	ts, err := sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "hello there", "")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	eventIDs := map[string]bool{}
	for range 2 {
		ev := c.next(t, 5*time.Second, socketmode.EventTypeEventsAPI)
		api := ev.Data.(slackevents.EventsAPIEvent)
		if api.TeamID != ws.TeamID || api.APIAppID != ws.AppID {
			t.Errorf("team/app = %s/%s", api.TeamID, api.APIAppID)
		}
		cb := api.Data.(*slackevents.EventsAPICallbackEvent)
		eventIDs[cb.EventID] = true
		if len(cb.AuthedUsers) == 0 && cb.EventTime == 0 {
			t.Errorf("event_time missing")
		}
		switch e := api.InnerEvent.Data.(type) {
		case *slackevents.AppMentionEvent:
			seen["app_mention"] = true
			if e.TimeStamp != ts || e.User != ws.UserIDs[0] || !strings.HasPrefix(e.Text, "<@"+ws.BotUserID+"> ") {
				t.Errorf("app_mention = %+v", e)
			}
		case *slackevents.MessageEvent:
			seen["message"] = true
			if e.ChannelType != "channel" || e.TimeStamp != ts {
				t.Errorf("message = %+v", e)
			}
		default:
			t.Errorf("unexpected inner event %T", e)
		}
		if err := c.AckCtx(ctxT(t, time.Second), ev.Request.EnvelopeID, nil); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	if !seen["app_mention"] || !seen["message"] || len(eventIDs) != 2 {
		t.Fatalf("seen %v with event ids %v", seen, eventIDs)
	}
	for range 2 {
		select {
		case st := <-ackCh:
			acked = append(acked, st)
		case <-time.After(2 * time.Second):
			t.Fatal("ack hook not called")
		}
	}
	for _, st := range acked {
		if st.Acked.Before(st.Sent) || st.Retries != 0 || st.AppID != ws.AppID {
			t.Errorf("stat %+v", st)
		}
	}
	if n := sim.Unacked(); n != 0 {
		t.Errorf("Unacked = %d", n)
	}
}

func TestSocketModeRedeliversUnacked(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t, slacksim.WithAckTimeout(300*time.Millisecond))
	c := runSocketMode(t, sim, ws)
	c.next(t, 5*time.Second, socketmode.EventTypeHello)
	if _, err := sim.DM(ws.TeamID, ws.UserIDs[0], "are you there?", ""); err != nil {
		t.Fatal(err)
	}
	first := c.next(t, 5*time.Second, socketmode.EventTypeEventsAPI)
	if first.Request.RetryAttempt != 0 {
		t.Fatalf("first delivery retry_attempt = %d", first.Request.RetryAttempt)
	}
	// Not acked: Slack sends it again.
	again := c.next(t, 5*time.Second, socketmode.EventTypeEventsAPI)
	if again.Request.RetryAttempt != 1 || again.Request.RetryReason != "timeout" {
		t.Fatalf("redelivery retry_attempt=%d reason=%q", again.Request.RetryAttempt, again.Request.RetryReason)
	}
	id1 := first.Data.(slackevents.EventsAPIEvent).Data.(*slackevents.EventsAPICallbackEvent).EventID
	id2 := again.Data.(slackevents.EventsAPIEvent).Data.(*slackevents.EventsAPICallbackEvent).EventID
	if id1 != id2 {
		t.Errorf("event_id changed on redelivery: %s → %s", id1, id2)
	}
	if err := c.AckCtx(ctxT(t, time.Second), again.Request.EnvelopeID, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, func() bool { return sim.Unacked() == 0 })
	if st := sim.Envelopes(); len(st) != 1 || st[0].Retries != 1 {
		t.Errorf("envelopes = %+v", st)
	}
}

func TestSocketModeDisconnectReconnects(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t)
	c := runSocketMode(t, sim, ws)
	c.next(t, 5*time.Second, socketmode.EventTypeConnected)
	c.next(t, 5*time.Second, socketmode.EventTypeHello)
	calls := sim.Calls("apps.connections.open")
	if n := sim.Disconnect(ws.AppID, "refresh_requested"); n != 1 {
		t.Fatalf("Disconnect reached %d sockets", n)
	}
	c.next(t, 5*time.Second, socketmode.EventTypeConnected)
	c.next(t, 5*time.Second, socketmode.EventTypeHello)
	if got := sim.Calls("apps.connections.open"); got != calls+1 {
		t.Errorf("apps.connections.open calls %d → %d, want a fresh URL", calls, got)
	}
	waitFor(t, 3*time.Second, func() bool { return sim.Connections(ws.AppID) == 1 })

	// Events still flow on the new socket.
	if _, err := sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "still there?", ""); err != nil {
		t.Fatal(err)
	}
	c.next(t, 5*time.Second, socketmode.EventTypeEventsAPI)

	// An abrupt drop reconnects too.
	sim.DropConnections(ws.AppID)
	c.next(t, 5*time.Second, socketmode.EventTypeHello)
}

func TestTicketIsSingleUse(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t)
	u := openURL(t, sim, ws.AppToken)
	if !strings.HasPrefix(u, "ws://") || !strings.Contains(u, "/link/?ticket=") {
		t.Fatalf("url %s", u)
	}
	conn, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("first dial: %v", err)
	}
	resp.Body.Close()
	defer conn.Close()
	_, resp, err = websocket.DefaultDialer.Dial(u, nil)
	if err == nil {
		t.Fatal("second dial with the same ticket succeeded")
	}
	if resp != nil {
		resp.Body.Close()
	}
}

func TestHelloPingsAndRoundRobin(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t, slacksim.WithPingInterval(50*time.Millisecond))
	a := dialRaw(t, sim, ws)
	pinged := make(chan struct{}, 1)
	a.ws.SetPingHandler(func(string) error {
		select {
		case pinged <- struct{}{}:
		default:
		}
		return nil
	})
	hello := a.read(time.Second)
	if hello["type"] != "hello" || hello["num_connections"] != 1.0 {
		t.Fatalf("hello = %v", hello)
	}
	if ci := hello["connection_info"].(map[string]any); ci["app_id"] != ws.AppID {
		t.Errorf("connection_info = %v", ci)
	}
	if di := hello["debug_info"].(map[string]any); di["host"] == nil || di["approximate_connection_time"] == nil {
		t.Errorf("debug_info = %v", di)
	}
	b := dialRaw(t, sim, ws)
	if h := b.read(time.Second); h["num_connections"] != 2.0 {
		t.Fatalf("second hello = %v", h)
	}

	for range 4 {
		if _, err := sim.Post(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "msg", ""); err != nil {
			t.Fatal(err)
		}
	}
	got := map[*rawConn]int{}
	for _, rc := range []*rawConn{a, b} {
		for range 2 {
			env := rc.read(2 * time.Second)
			if env["type"] != "events_api" {
				t.Fatalf("frame %v", env)
			}
			rc.ack(env["envelope_id"].(string))
			got[rc]++
		}
	}
	if got[a] != 2 || got[b] != 2 {
		t.Errorf("round robin spread %v", got)
	}
	waitFor(t, 2*time.Second, func() bool { return sim.Unacked() == 0 })

	// Pings are control frames, seen by the reader: read with a short deadline
	// (which breaks the conn, so this comes last).
	_ = a.ws.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, _, _ = a.ws.ReadMessage()
	select {
	case <-pinged:
	default:
		t.Error("no websocket PING within 300ms at a 50ms interval")
	}
}

func TestTooManyWebsockets(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t)
	for range 10 {
		dialRaw(t, sim, ws).read(time.Second)
	}
	eleventh := dialRaw(t, sim, ws)
	f := eleventh.read(time.Second)
	if f["type"] != "disconnect" || f["reason"] != "too_many_websockets" {
		t.Fatalf("11th socket got %v", f)
	}
	if n := sim.Connections(ws.AppID); n != 10 {
		t.Errorf("Connections = %d", n)
	}
}

func TestQueuedUntilConnectedAndOversizedAck(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t)
	ts, err := sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "early bird", "")
	if err != nil {
		t.Fatal(err)
	}
	rc := dialRaw(t, sim, ws)
	if h := rc.read(time.Second); h["type"] != "hello" {
		t.Fatalf("first frame %v", h)
	}
	env := rc.read(time.Second)
	ev := env["payload"].(map[string]any)["event"].(map[string]any)
	if ev["ts"] != ts {
		t.Fatalf("queued event %v", ev)
	}
	// An ack of 20,480 bytes or more is refused, like Slack.
	big := strings.Repeat("x", 21000)
	if err := rc.ws.WriteJSON(map[string]any{"envelope_id": env["envelope_id"], "payload": map[string]any{"text": big}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := sim.Unacked(); n != 2 {
		t.Errorf("Unacked after oversized ack = %d, want 2", n)
	}
	rc.ack(env["envelope_id"].(string))
	waitFor(t, time.Second, func() bool { return sim.Unacked() == 1 })
}

func TestSendRawMalformed(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t)
	c := runSocketMode(t, sim, ws)
	c.next(t, 5*time.Second, socketmode.EventTypeHello)
	sim.SendRaw(ws.AppID, []byte(`{"envelope_id":"e1","type":"events_api","payload":{"type":"event_callback","event":{"type":"no_such_event"}}}`))
	ev := c.next(t, 5*time.Second, socketmode.EventTypeErrorBadMessage, socketmode.EventTypeEventsAPI)
	if ev.Type != socketmode.EventTypeErrorBadMessage && ev.Type != socketmode.EventTypeEventsAPI {
		t.Fatalf("got %v", ev.Type)
	}
	if ev.Type == socketmode.EventTypeErrorBadMessage {
		if _, ok := ev.Data.(*socketmode.ErrorBadMessage); !ok {
			t.Errorf("bad message data %T", ev.Data)
		}
	}
	// The connection survives the bad frame.
	if _, err := sim.DM(ws.TeamID, ws.UserIDs[0], "after garbage", ""); err != nil {
		t.Fatal(err)
	}
	c.next(t, 5*time.Second, socketmode.EventTypeEventsAPI)
}

func TestRevokedAppTokenStopsClient(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t, slacksim.WithDisconnectGrace(100*time.Millisecond))
	sm := socketmode.New(apiClient(t, sim, ws))
	errc := make(chan error, 1)
	ctx := ctxT(t, 10*time.Second)
	go func() { errc <- sm.RunContext(ctx) }()
	for ev := range sm.Events {
		if ev.Type == socketmode.EventTypeHello {
			break
		}
	}
	go func() { // keep draining until the test ends
		for {
			select {
			case <-sm.Events:
			case <-ctx.Done():
				return
			}
		}
	}()
	sim.RevokeToken(ws.AppToken)
	select {
	case err := <-errc:
		if err == nil || err.Error() != "token_revoked" {
			t.Errorf("RunContext = %v, want token_revoked", err)
		}
	case <-ctx.Done():
		t.Fatal("socketmode client kept running after its token was revoked")
	}
}

// A click on a button of the bot's message arrives as slack-go parses
// Slack's: an interactive envelope whose payload is a block_actions
// InteractionCallback naming the person, their workspace, the message and
// the button; unacked, it is redelivered like an event.
func TestSocketModeButtonClick(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t, slacksim.WithAckTimeout(300*time.Millisecond))
	api := apiClient(t, sim, ws)
	c := runSocketMode(t, sim, ws)
	c.next(t, 5*time.Second, socketmode.EventTypeHello)
	root, err := sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "hi", "")
	if err != nil {
		t.Fatal(err)
	}
	_, ts, err := api.PostMessage(ws.GeneralChannelID, slack.MsgOptionTS(root), slack.MsgOptionBlocks(
		slack.NewMarkdownBlock("", "Answer"),
		slack.NewActionBlock("votes", slack.NewButtonBlockElement("vote_up", "the value", slack.NewTextBlockObject(slack.PlainTextType, "👍", true, false)))))
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.ClickButton(ws.TeamID, ws.GeneralChannelID, ts, ws.UserIDs[1], "nope"); !errors.Is(err, slacksim.ErrNoButton) {
		t.Fatalf("click on a button the message lacks: %v", err)
	}
	if err := sim.ClickButton(ws.TeamID, ws.GeneralChannelID, ts, ws.UserIDs[1], "vote_up"); err != nil {
		t.Fatal(err)
	}
	first := c.next(t, 5*time.Second, socketmode.EventTypeInteractive)
	again := c.next(t, 5*time.Second, socketmode.EventTypeInteractive) // not acked: redelivered
	if again.Request.RetryAttempt != 1 || again.Request.EnvelopeID != first.Request.EnvelopeID {
		t.Fatalf("redelivery: retry %d, envelope %s vs %s", again.Request.RetryAttempt, again.Request.EnvelopeID, first.Request.EnvelopeID)
	}
	cb, ok := again.Data.(slack.InteractionCallback)
	if !ok {
		t.Fatalf("payload parsed as %T", again.Data)
	}
	if cb.Type != slack.InteractionTypeBlockActions || cb.Team.ID != ws.TeamID || cb.User.ID != ws.UserIDs[1] || cb.User.TeamID != ws.TeamID ||
		cb.Channel.ID != ws.GeneralChannelID || cb.Container.MessageTs != ts || cb.Container.ThreadTs != root || cb.APIAppID != ws.AppID ||
		len(cb.ActionCallback.BlockActions) != 1 {
		t.Fatalf("callback %+v", cb)
	}
	if a := cb.ActionCallback.BlockActions[0]; a.ActionID != "vote_up" || a.Value != "the value" || a.BlockID != "votes" || a.ActionTs == "" {
		t.Fatalf("action %+v", a)
	}
	if err := c.AckCtx(ctxT(t, time.Second), again.Request.EnvelopeID, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, func() bool {
		for _, st := range sim.Envelopes() {
			if st.EnvelopeID == again.Request.EnvelopeID {
				return !st.Acked.IsZero()
			}
		}
		return false
	})

	// A guest from another workspace: Slack names their workspace.
	if err := sim.ClickButtonAs(ws.TeamID, ws.GeneralChannelID, ts, "TGUEST", "UGUEST", "vote_up"); err != nil {
		t.Fatal(err)
	}
	guest := c.next(t, 5*time.Second, socketmode.EventTypeInteractive).Data.(slack.InteractionCallback)
	if guest.Team.ID != "TGUEST" || guest.User.TeamID != "TGUEST" || guest.User.ID != "UGUEST" {
		t.Fatalf("guest click: team %s, user %+v", guest.Team.ID, guest.User)
	}
}
