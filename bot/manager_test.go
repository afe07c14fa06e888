package bot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/metrics"
	"github.com/konstruct/konstruct/slacksim"
)

func TestManagerDeliversNormalizedAndAcks(t *testing.T) {
	t.Parallel()
	sim, ws, src := oneWorkspace(t)
	mx := metrics.New()
	var seen atomic.Int64
	rec := newRecorder()
	acks := watchAcks(sim, rec)
	m := startManager(t, sim, ManagerConfig{Source: src.list, Metrics: mx, Recorder: rec,
		OnWorkspaces: func(w []konstruct.Workspace) { seen.Store(int64(len(w))) }})

	waitFor(t, 5*time.Second, "two sockets", func() bool { return sim.Connections(ws.AppID) == 2 })
	ts, err := sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "what's up?", "")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]konstruct.Message{}
	for range 2 {
		msg := next(t, m, 5*time.Second)
		got[msg.EventType] = msg
	}
	for typ, msg := range got {
		if msg.TS != ts || msg.Text != "what's up?" || msg.TeamID != ws.TeamID || msg.ChannelID != ws.GeneralChannelID ||
			msg.User != ws.UserIDs[0] || msg.BotUserID != ws.BotUserID || msg.EventID == "" || msg.ReceivedAt.IsZero() {
			t.Errorf("%s: %+v", typ, msg)
		}
	}
	if !got["app_mention"].IsMention || got["message"].IsMention || got["message"].ChannelType != konstruct.ChannelPublic {
		t.Errorf("flags: %+v", got)
	}
	// Slack counts an ack once it reads it, the gateway once it wrote it.
	waitFor(t, 3*time.Second, "acks", func() bool {
		return sim.Unacked() == 0 && acks.count() == 2 && value(mx.EnvelopesAcked) == 2
	})
	acks.check(t)
	if seen.Load() != 1 {
		t.Errorf("OnWorkspaces saw %d workspaces", seen.Load())
	}
	st := m.States()
	if len(st) != 1 || st[0].TeamID != ws.TeamID || st[0].AppID != ws.AppID || st[0].Connections != 2 || st[0].Connected != 2 {
		t.Errorf("States = %+v", st)
	}
	if n := value(mx.SocketsConnected); n != 2 {
		t.Errorf("sockets gauge %v", n)
	}
}

func TestManagerSharedAppOneSocketSet(t *testing.T) {
	t.Parallel()
	sim := newSim(t)
	a := sim.AddWorkspace(slacksim.WorkspaceSpec{})
	b := sim.AddWorkspace(slacksim.WorkspaceSpec{AppID: a.AppID, AppToken: a.AppToken})
	src := &source{}
	src.set(workspaceOf(a), workspaceOf(b))
	m := startManager(t, sim, ManagerConfig{Source: src.list, ConnectionsPerWorkspace: 3})
	waitFor(t, 5*time.Second, "three sockets", func() bool { return sim.Connections(a.AppID) == 3 })
	tsA, _ := sim.DM(a.TeamID, a.UserIDs[0], "hi from A", "")
	tsB, _ := sim.DM(b.TeamID, b.UserIDs[0], "hi from B", "")
	got := collect(t, m, 5*time.Second, tsA, tsB)
	if got[tsA][0].TeamID != a.TeamID || got[tsB][0].TeamID != b.TeamID || !got[tsB][0].IsDM {
		t.Errorf("routing by team: %+v", got)
	}
	time.Sleep(200 * time.Millisecond)
	if n := sim.Connections(a.AppID); n != 3 {
		t.Errorf("%d sockets for a shared app, want 3", n)
	}
	if st := m.States(); len(st) != 2 || st[0].Connected != 3 || st[1].Connected != 3 {
		t.Errorf("States = %+v", st)
	}
}

func TestManagerHotAddAndRemove(t *testing.T) {
	t.Parallel()
	sim := newSim(t)
	ws := sim.AddWorkspace(slacksim.WorkspaceSpec{})
	src := &source{}
	m := startManager(t, sim, ManagerConfig{Source: src.list})

	// Periodic reconcile alone (no Trigger) connects within 10 s.
	src.set(workspaceOf(ws))
	waitFor(t, 10*time.Second, "connect after add", func() bool { return sim.Connections(ws.AppID) == 2 })
	ts, _ := sim.DM(ws.TeamID, ws.UserIDs[0], "hello", "")
	collect(t, m, 5*time.Second, ts)

	src.set()
	start := time.Now()
	waitFor(t, 10*time.Second, "disconnect after remove", func() bool { return sim.Connections(ws.AppID) == 0 })
	t.Logf("disconnected %v after remove", time.Since(start).Round(time.Millisecond))
	waitFor(t, 2*time.Second, "states empty", func() bool { return len(m.States()) == 0 })

	// Trigger reconciles at once.
	src.set(workspaceOf(ws))
	start = time.Now()
	m.Trigger()
	waitFor(t, 2*time.Second, "connect after trigger", func() bool { return sim.Connections(ws.AppID) == 2 })
	t.Logf("connected %v after trigger", time.Since(start).Round(time.Millisecond))
}

func TestManagerRevokedTokenMarkedOthersUnaffected(t *testing.T) {
	t.Parallel()
	sim := newSim(t)
	bad := sim.AddWorkspace(slacksim.WorkspaceSpec{})
	good := sim.AddWorkspace(slacksim.WorkspaceSpec{})
	src := &source{}
	src.set(workspaceOf(bad), workspaceOf(good))
	var mu sync.Mutex
	var revoked []string
	m := startManager(t, sim, ManagerConfig{Source: src.list, ReconcileEvery: 200 * time.Millisecond,
		OnRevoked: func(ctx context.Context, team string) {
			mu.Lock()
			revoked = append(revoked, team)
			mu.Unlock()
			src.revoke(ctx, team)
		}})
	waitFor(t, 5*time.Second, "sockets", func() bool {
		return sim.Connections(bad.AppID) == 2 && sim.Connections(good.AppID) == 2
	})

	sim.RevokeToken(bad.AppToken)
	waitFor(t, 5*time.Second, "revocation", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(revoked) > 0
	})
	opens := sim.Calls("apps.connections.open")
	time.Sleep(time.Second)
	if n := sim.Calls("apps.connections.open") - opens; n > 0 {
		t.Errorf("%d apps.connections.open calls after revocation: hot loop", n)
	}
	mu.Lock()
	if !slices.Equal(revoked, []string{bad.TeamID}) {
		t.Errorf("OnRevoked for %v, want once for %s", revoked, bad.TeamID)
	}
	mu.Unlock()
	if sim.Connections(bad.AppID) != 0 {
		t.Errorf("revoked app still has sockets")
	}
	ts, _ := sim.DM(good.TeamID, good.UserIDs[0], "still there?", "")
	collect(t, m, 5*time.Second, ts)
	if st := m.States(); len(st) != 1 || st[0].TeamID != good.TeamID || st[0].Connected != 2 {
		t.Errorf("States = %+v", st)
	}
}

func TestManagerReconnectsWithoutLoss(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		break_ func(sim *slacksim.Server, appID string)
	}{
		{"refresh_requested", func(sim *slacksim.Server, appID string) { sim.Disconnect(appID, "refresh_requested") }},
		{"warning then close", func(sim *slacksim.Server, appID string) {
			sim.Disconnect(appID, "warning")
			sim.DropConnections(appID)
		}},
		{"abrupt close", func(sim *slacksim.Server, appID string) { sim.DropConnections(appID) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sim, ws, src := oneWorkspace(t, slacksim.WithAckTimeout(time.Second))
			mx := metrics.New()
			m := startManager(t, sim, ManagerConfig{Source: src.list, Metrics: mx})
			waitFor(t, 5*time.Second, "sockets", func() bool { return sim.Connections(ws.AppID) == 2 })

			var want []string
			for i := range 20 {
				if i == 5 {
					tc.break_(sim, ws.AppID)
				}
				ts, err := sim.DM(ws.TeamID, ws.UserIDs[0], "msg", "")
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, ts)
			}
			collect(t, m, 15*time.Second, want...)
			waitFor(t, 5*time.Second, "sockets back", func() bool { return sim.Connections(ws.AppID) == 2 })
			waitFor(t, 5*time.Second, "all acked", func() bool { return sim.Unacked() == 0 })
			// Counted once the replacement is live (and the old socket closed).
			waitFor(t, 3*time.Second, "a reconnect counted", func() bool { return value(mx.Reconnects) > 0 })
		})
	}
}

func TestManagerMalformedEnvelopesAcked(t *testing.T) {
	t.Parallel()
	sim, ws, src := oneWorkspace(t)
	mx := metrics.New()
	m := startManager(t, sim, ManagerConfig{Source: src.list, Metrics: mx, ConnectionsPerWorkspace: 1})
	waitFor(t, 5*time.Second, "socket", func() bool { return sim.Connections(ws.AppID) == 1 })

	for _, raw := range []string{
		`{"envelope_id":"bad-1","type":"events_api","payload":{"type":"event_callback","team_id":"T","event":{"type":"brand_new_event"}}}`,
		`{"envelope_id":"bad-2","type":"events_api","payload":{"type":"event_callback","team_id":"T","event":{"type":"message"}}}`,
		`{"envelope_id":"bad-3","type":"something_else","payload":{}}`,
		`{"envelope_id":"bad-4","type":"slash_commands","payload":{"command":"/x"}}`,
		`{"envelope_id":"bad-5","type":"events_api","payload":"not an object","retry_attempt":"x"}`,
		`{"type":"events_api"`,
		`[1,2,3]`,
	} {
		sim.SendRaw(ws.AppID, []byte(raw))
	}
	// A good event after the junk still arrives, on the same socket.
	ts, _ := sim.DM(ws.TeamID, ws.UserIDs[0], "after the junk", "")
	got := collect(t, m, 5*time.Second, ts)
	if got[ts][0].Text != "after the junk" {
		t.Errorf("got %+v", got)
	}
	// 5 junk envelopes with an id (the 2 unparseable frames have none) and
	// the DM: once all are acked, all were classified.
	waitFor(t, 3*time.Second, "acks", func() bool { return value(mx.EnvelopesAcked) >= 6 })
	if got := recOf(m).recorded(); len(got) != 1 {
		t.Errorf("recorded %d messages, want the DM only: %+v", len(got), got)
	}
	if n := sim.Connections(ws.AppID); n != 1 {
		t.Errorf("%d sockets after junk", n)
	}
}

// An envelope that finds the intake full stays unacked: Slack redelivers
// it, and the redelivery is recorded and acked once there is room.
func TestManagerQueueFullLeavesUnacked(t *testing.T) {
	t.Parallel()
	sim, ws, src := oneWorkspace(t, slacksim.WithAckTimeout(500*time.Millisecond))
	mx := metrics.New()
	release := make(chan struct{})
	var releaseOnce sync.Once
	open := func() { releaseOnce.Do(func() { close(release) }) }
	// One classifier, held, and a queue of one: the intake takes exactly
	// two envelopes (one being classified, one queued).
	m := startManagerWith(t, sim, ManagerConfig{Source: src.list, Metrics: mx, QueueSize: 1, Normalizers: 1}, func(m *Manager) {
		m.beforeNormalize = func() { <-release }
	})
	t.Cleanup(open) // before the manager's cleanup
	waitFor(t, 5*time.Second, "sockets", func() bool { return sim.Connections(ws.AppID) == 2 })

	var want []string
	for i := range 5 {
		ts, err := sim.DM(ws.TeamID, ws.UserIDs[0], fmt.Sprint("msg ", i), "")
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, ts)
	}
	waitFor(t, 3*time.Second, "queue full counted", func() bool { return value(mx.GatewayQueueFull) >= 3 })
	if n := sim.Unacked(); n != 5 {
		t.Fatalf("%d unacked, want 5: an envelope that did not fit the intake was acked", n)
	}
	open()
	// The ones left out come back as redeliveries and get in.
	got := collect(t, m, 5*time.Second, want...)
	firsts := 0
	for _, ts := range want {
		if slices.ContainsFunc(got[ts], func(msg konstruct.Message) bool { return msg.RetryAttempt == 0 }) {
			firsts++
		}
	}
	if firsts != 2 {
		t.Errorf("%d posts recorded from their first delivery, want the 2 the intake took; the rest from redeliveries", firsts)
	}
	waitFor(t, 3*time.Second, "all acked", func() bool { return sim.Unacked() == 0 })
}

func TestManagerLostAckRedelivered(t *testing.T) {
	t.Parallel()
	sim, ws, src := oneWorkspace(t, slacksim.WithAckTimeout(300*time.Millisecond))
	var dropped atomic.Bool
	m := startManagerWith(t, sim, ManagerConfig{Source: src.list}, func(m *Manager) {
		m.dropAck = func(string) bool { return dropped.CompareAndSwap(false, true) }
	})
	waitFor(t, 5*time.Second, "sockets", func() bool { return sim.Connections(ws.AppID) == 2 })

	ts, _ := sim.DM(ws.TeamID, ws.UserIDs[0], "once", "")
	// Recorded, its ack lost, redelivered, recorded again (the router
	// dedupes on the event id), acked.
	first, second := next(t, m, 3*time.Second), next(t, m, 3*time.Second)
	if first.TS != ts || second.TS != ts || first.EventID != second.EventID || first.RetryAttempt != 0 || second.RetryAttempt != 1 {
		t.Errorf("first %+v\nsecond %+v", first, second)
	}
	waitFor(t, 3*time.Second, "acked", func() bool { return sim.Unacked() == 0 })
}

// Shutdown: the intake takes no new envelope, the one taken is recorded
// and acked while the sockets stay open, then the sockets close.
func TestManagerShutdownDrainsThenClosesSockets(t *testing.T) {
	t.Parallel()
	sim, ws, src := oneWorkspace(t)
	mx := metrics.New()
	rec := newRecorder()
	t.Cleanup(rec.release)
	m := NewManager(ManagerConfig{APIURL: sim.APIURL(), HTTPClient: simClient(t), Source: src.list, Metrics: mx,
		Recorder: rec, DrainTimeout: 10 * time.Second, RecordTimeout: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitFor(t, 5*time.Second, "sockets", func() bool { return sim.Connections(ws.AppID) == 2 })
	ts1, _ := sim.DM(ws.TeamID, ws.UserIDs[0], "before stop", "")
	waitFor(t, 3*time.Second, "acked", func() bool { return sim.Unacked() == 0 })

	rec.hold()
	ts2, _ := sim.DM(ws.TeamID, ws.UserIDs[0], "taken before stop", "")
	waitFor(t, 3*time.Second, "record in flight", func() bool { return rec.heldMessages() == 1 })
	cancel()
	waitFor(t, 3*time.Second, "intake closed", func() bool { return intakeClosed(m) })
	ts3, _ := sim.DM(ws.TeamID, ws.UserIDs[0], "after stop", "")
	// Refused (read, never taken): not counted as a full intake.
	waitFor(t, 3*time.Second, "envelope refused", func() bool { return value(mx.EnvelopesReceived.WithLabelValues("events_api")) == 3 })
	if n := value(mx.GatewayQueueFull); n != 0 {
		t.Errorf("a refusal at shutdown counted as a full intake (%v)", n)
	}

	// Draining: the sockets stay open for the ack of the one taken.
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) while a record was in flight", err)
	default:
	}
	if n := sim.Connections(ws.AppID); n != 2 {
		t.Errorf("%d sockets while draining, want 2", n)
	}
	if n := sim.Unacked(); n != 2 {
		t.Errorf("%d unacked while draining, want 2", n)
	}
	rec.release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "sockets closed", func() bool { return sim.Connections(ws.AppID) == 0 })
	var got []string
	for _, msg := range rec.recorded() {
		got = append(got, msg.TS)
	}
	if !slices.Equal(got, []string{ts1, ts2}) {
		t.Fatalf("recorded %v, want [%s %s] (not %s, sent after the stop)", got, ts1, ts2, ts3)
	}
	// Slack read the ack of the one taken before the close; the one sent
	// after the stop is left for redelivery.
	waitFor(t, 3*time.Second, "acked before the close", func() bool {
		st, _ := envelopeOf(sim, rec.recorded()[1].EventID)
		return !st.Acked.IsZero() && sim.Unacked() == 1
	})
	if err := m.Run(context.Background()); !errors.Is(err, errRunTwice) {
		t.Errorf("second Run: %v, want errRunTwice", err)
	}
}

// A record that outlasts DrainTimeout does not hold the shutdown: the
// sockets close, and the envelope stays unacked for Slack to redeliver.
func TestManagerShutdownDrainTimeoutLeavesUnacked(t *testing.T) {
	t.Parallel()
	sim, ws, src := oneWorkspace(t)
	mx := metrics.New()
	rec := newRecorder()
	t.Cleanup(rec.release)
	m := NewManager(ManagerConfig{APIURL: sim.APIURL(), HTTPClient: simClient(t), Source: src.list, Metrics: mx,
		Recorder: rec, DrainTimeout: 300 * time.Millisecond, RecordTimeout: 500 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitFor(t, 5*time.Second, "sockets", func() bool { return sim.Connections(ws.AppID) == 2 })

	rec.hold()
	_, _ = sim.DM(ws.TeamID, ws.UserIDs[0], "stuck", "")
	waitFor(t, 3*time.Second, "record in flight", func() bool { return rec.heldMessages() == 1 })
	start := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("Run returned %v after the stop, before DrainTimeout (300ms)", d)
	}
	waitFor(t, 3*time.Second, "sockets closed", func() bool { return sim.Connections(ws.AppID) == 0 })
	// The record completes late: its ack has no socket left.
	rec.release()
	<-m.intake.committed
	if n := value(mx.EnvelopesAcked); n != 0 {
		t.Errorf("%v acks after the sockets closed", n)
	}
	if n := sim.Unacked(); n != 1 {
		t.Errorf("%d unacked, want 1", n)
	}
}

// A workspace listed with a problem (tokens that do not decrypt) is
// skipped and shown in States; the others connect and are served.
func TestManagerSkipsWorkspaceWithProblem(t *testing.T) {
	t.Parallel()
	sim := newSim(t)
	broken := sim.AddWorkspace(slacksim.WorkspaceSpec{})
	good := sim.AddWorkspace(slacksim.WorkspaceSpec{})
	bw := workspaceOf(broken)
	bw.AppToken, bw.BotToken, bw.Problem = "", "", "cannot decrypt the tokens of workspace "+broken.TeamID
	src := &source{}
	src.set(bw, workspaceOf(good))
	var seen [][]konstruct.Workspace
	var mu sync.Mutex
	m := startManager(t, sim, ManagerConfig{Source: src.list, ReconcileEvery: 100 * time.Millisecond,
		OnWorkspaces: func(ws []konstruct.Workspace) {
			mu.Lock()
			seen = append(seen, ws)
			mu.Unlock()
		}})
	waitFor(t, 5*time.Second, "the good workspace's sockets", func() bool { return sim.Connections(good.AppID) == 2 })
	ts, _ := sim.DM(good.TeamID, good.UserIDs[0], "served?", "")
	collect(t, m, 5*time.Second, ts)
	if n := sim.Connections(broken.AppID); n != 0 {
		t.Errorf("the broken workspace has %d sockets", n)
	}
	st := m.States()
	if len(st) != 2 {
		t.Fatalf("States = %+v", st)
	}
	for _, s := range st {
		switch s.TeamID {
		case broken.TeamID:
			if !s.Skipped || s.Connected != 0 || !strings.Contains(s.LastError, "cannot decrypt") {
				t.Errorf("broken: %+v", s)
			}
		case good.TeamID:
			if s.Skipped || s.Connected != 2 {
				t.Errorf("good: %+v", s)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, ws := range seen {
		for _, w := range ws {
			if w.TeamID == broken.TeamID {
				t.Errorf("OnWorkspaces was given the broken workspace: %+v", w)
			}
		}
	}
}
