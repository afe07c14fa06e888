package bot

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/konstruct/konstruct/metrics"
	"github.com/konstruct/konstruct/slacksim"
)

// The ack does not wait for normalization or the router: with every
// normalizer blocked, envelopes are still acked at once, and the messages
// arrive once the normalizers resume.
func TestManagerAcksBeforeNormalizing(t *testing.T) {
	t.Parallel()
	sim, ws, src := oneWorkspace(t, slacksim.WithAckTimeout(5*time.Second))
	mx := metrics.New()
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before the manager's cleanup
	var blocked atomic.Int64
	m := startManagerWith(t, sim, ManagerConfig{Source: src.list, Metrics: mx, Normalizers: 2}, func(m *Manager) {
		m.beforeNormalize = func() {
			blocked.Add(1)
			<-release
		}
	})
	waitFor(t, 5*time.Second, "sockets", func() bool { return sim.Connections(ws.AppID) == 2 })

	var want []string
	for i := range 10 {
		ts, err := sim.DM(ws.TeamID, ws.UserIDs[0], fmt.Sprintf("msg %d", i), "")
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, ts)
	}
	waitFor(t, 2*time.Second, "acks while normalization is blocked", func() bool { return sim.Unacked() == 0 })
	if n := blocked.Load(); n == 0 || n > 2 {
		t.Errorf("%d normalizers blocked, want 1–2", n)
	}
	select {
	case msg := <-m.Events():
		t.Fatalf("a message got through blocked normalizers: %+v", msg)
	default:
	}
	for _, st := range sim.Envelopes() {
		if st.Retries != 0 {
			t.Errorf("envelope %s redelivered", st.EnvelopeID)
		}
	}
	releaseOnce.Do(func() { close(release) })
	got := collect(t, m, 5*time.Second, want...)
	for _, ts := range want {
		if len(got[ts]) != 1 {
			t.Errorf("%s delivered %d times", ts, len(got[ts]))
		}
	}
	if n := value(mx.EnvelopesAcked); n != 10 {
		t.Errorf("acked %v, want 10", n)
	}
}

// Frames that are not proper envelopes: acked when they carry an envelope
// id, ignored otherwise; the socket survives and keeps delivering.
func TestManagerMalformedFrames(t *testing.T) {
	t.Parallel()
	sim, ws, src := oneWorkspace(t)
	mx := metrics.New()
	var mu sync.Mutex
	var acked []string
	m := startManagerWith(t, sim, ManagerConfig{Source: src.list, Metrics: mx, ConnectionsPerWorkspace: 1}, func(m *Manager) {
		m.dropAck = func(id string) bool {
			mu.Lock()
			acked = append(acked, id)
			mu.Unlock()
			return false
		}
	})
	waitFor(t, 5*time.Second, "socket", func() bool { return sim.Connections(ws.AppID) == 1 })

	frames := []struct{ raw, ackedAs string }{
		{`{"envelope_id":"m-1","type":"events_api"}`, "m-1"},                                // no payload
		{`{"envelope_id":"m-2","type":"events_api","payload":{"type":"event_callback"`, ""}, // truncated
		{`{"envelope_id":"m-\u0033","type":"events_api","payload":[1,2]}`, "m-3"},           // escaped id, odd payload
		{`{"type":"events_api","payload":{}}`, ""},                                          // no id
		{`{"envelope_id":"m-5","type":"events_api","payload":{"type":"event_callback","team_id":"T","event":{"type":"message","channel":"C"}}}`, "m-5"},
		{`{"envelope_id":"m-6","type":"interactive","payload":{"type":"block_actions"}}`, "m-6"},
		{`{"envelope_id":"m-7","type":"brand_new_type"}`, "m-7"},
		{`{"envelope_id":7,"type":"events_api","payload":{}}`, ""}, // id not a string
		{`{"envelope_id":"m-9","type":"events_api","payload":{},"retry_attempt":"x"}`, "m-9"},
		{`{"envelope_id":"m-10", "payload":{"a":"}{\"]"} , "type":"events_api"}`, "m-10"}, // brackets and quotes in strings
		{`{"envelope_id":"m-11","type":"slash_commands"} trailing`, ""},                   // not JSON: no id to trust
		{`null`, ""},
		{`"just a string"`, ""},
		{``, ""},
	}
	var wantAcked []string
	for _, f := range frames {
		sim.SendRaw(ws.AppID, []byte(f.raw))
		if f.ackedAs != "" {
			wantAcked = append(wantAcked, f.ackedAs)
		}
	}
	ts, _ := sim.DM(ws.TeamID, ws.UserIDs[0], "after the junk", "")
	got := collect(t, m, 5*time.Second, ts)
	if len(got[ts]) != 1 || got[ts][0].Text != "after the junk" {
		t.Errorf("got %+v", got)
	}
	waitFor(t, 3*time.Second, "acks", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= len(wantAcked)+1
	})
	mu.Lock()
	gotAcked := slices.DeleteFunc(slices.Clone(acked), func(id string) bool { return !strings.HasPrefix(id, "m-") })
	mu.Unlock()
	slices.Sort(gotAcked)
	slices.Sort(wantAcked)
	if !slices.Equal(gotAcked, wantAcked) {
		t.Errorf("acked %v, want %v", gotAcked, wantAcked)
	}
	select {
	case msg := <-m.Events():
		t.Errorf("junk became a message: %+v", msg)
	case <-time.After(100 * time.Millisecond):
	}
	if n := sim.Connections(ws.AppID); n != 1 {
		t.Errorf("%d sockets after junk", n)
	}
	if n := value(mx.Reconnects); n != 0 {
		t.Errorf("%v reconnects after junk", n)
	}
}

// Shutdown under load: every envelope Slack saw acked is in Events before
// it closes (never ack-then-drop), and what was not acked is redelivered to
// whoever connects next.
func TestManagerShutdownUnderLoadKeepsAcked(t *testing.T) {
	t.Parallel()
	sim, ws, src := oneWorkspace(t, slacksim.WithAckTimeout(time.Second))
	m := NewManager(ManagerConfig{APIURL: sim.APIURL(), HTTPClient: simClient(t), Source: src.list, QueueSize: 64})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitFor(t, 5*time.Second, "sockets", func() bool { return sim.Connections(ws.AppID) == 2 })

	var load sync.WaitGroup
	stopLoad := make(chan struct{})
	load.Go(func() {
		for {
			select {
			case <-stopLoad:
				return
			default:
			}
			if _, err := sim.DM(ws.TeamID, ws.UserIDs[0], "load", ""); err != nil {
				return
			}
			time.Sleep(200 * time.Microsecond)
		}
	})
	// A slow router: the queue (64) fills, so some envelopes wait unacked.
	delivered := map[string]bool{}
	deadline := time.After(300 * time.Millisecond)
read:
	for {
		select {
		case msg := <-m.Events():
			delivered[msg.EventID] = true
			time.Sleep(time.Millisecond)
		case <-deadline:
			break read
		}
	}
	cancel()
	for msg := range m.Events() {
		delivered[msg.EventID] = true
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(stopLoad)
	load.Wait()
	acked := 0
	for _, st := range sim.Envelopes() {
		if st.Acked.IsZero() {
			continue
		}
		acked++
		if !delivered[st.EventID] {
			t.Errorf("envelope %s (%s) acked but never delivered", st.EnvelopeID, st.EventID)
		}
	}
	t.Logf("%d envelopes acked, %d delivered, %d unacked at shutdown", acked, len(delivered), sim.Unacked())
	if acked == 0 {
		t.Error("nothing acked")
	}
}
