package bot

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/konstruct/konstruct/metrics"
	"github.com/konstruct/konstruct/slacksim"
)

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
	// Every frame with an id is acked, so every one was classified.
	if got := recOf(m).recorded(); len(got) != 1 {
		t.Errorf("junk became a message: %+v", got)
	}
	if n := sim.Connections(ws.AppID); n != 1 {
		t.Errorf("%d sockets after junk", n)
	}
	if n := value(mx.Reconnects); n != 0 {
		t.Errorf("%v reconnects after junk", n)
	}
}

// Shutdown under load, with slow storage: every envelope Slack saw acked
// was recorded before its ack (never ack-then-lose), and what was not
// taken stays unacked for whoever connects next.
func TestManagerShutdownUnderLoadKeepsAcked(t *testing.T) {
	t.Parallel()
	sim, ws, src := oneWorkspace(t, slacksim.WithAckTimeout(time.Second))
	mx := metrics.New()
	rec := newRecorder()
	rec.slow(5 * time.Millisecond)
	acks := watchAcks(sim, rec)
	m := NewManager(ManagerConfig{APIURL: sim.APIURL(), HTTPClient: simClient(t), Source: src.list, Metrics: mx,
		Recorder: rec, QueueSize: 4, Normalizers: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitFor(t, 5*time.Second, "sockets", func() bool { return sim.Connections(ws.AppID) == 2 })

	var load sync.WaitGroup
	stopLoad := make(chan struct{})
	defer func() {
		close(stopLoad)
		load.Wait()
	}()
	for range 4 {
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
				time.Sleep(100 * time.Microsecond)
			}
		})
	}
	// Storage is slower than the load: the intake fills and some
	// envelopes are left unacked while others are recorded and acked.
	waitFor(t, 5*time.Second, "a full intake and some acks", func() bool {
		return value(mx.GatewayQueueFull) > 0 && value(mx.EnvelopesAcked) >= 20
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	acked, unacked := 0, 0
	for _, st := range sim.Envelopes() {
		if st.Acked.IsZero() {
			unacked++
			continue
		}
		acked++
		if rec.count(st.EventID) == 0 {
			t.Errorf("envelope %s (%s) acked but never recorded", st.EnvelopeID, st.EventID)
		}
	}
	acks.check(t)
	batches, _ := rec.calls()
	t.Logf("%d envelopes acked, %d recorded in %d records, %d unacked at shutdown", acked, len(rec.recorded()), len(batches), unacked)
	if acked == 0 || unacked == 0 {
		t.Errorf("%d acked, %d unacked: want both under load", acked, unacked)
	}
}
