package bot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/metrics"
	"github.com/konstruct/konstruct/slacksim"
)

// Write, then ack: while Record is held, the read loops go on reading but
// nothing is acked, and Slack has redelivered nothing; once Record
// returns, every envelope is acked, once, and recorded, once.
func TestManagerAcksOnlyOnceRecorded(t *testing.T) {
	t.Parallel()
	sim, ws, src := oneWorkspace(t, slacksim.WithAckTimeout(10*time.Second))
	mx := metrics.New()
	rec := newRecorder()
	rec.hold()
	acks := watchAcks(sim, rec)
	m := startManager(t, sim, ManagerConfig{Source: src.list, Metrics: mx, Recorder: rec, RecordTimeout: 10 * time.Second})
	waitFor(t, 5*time.Second, "sockets", func() bool { return sim.Connections(ws.AppID) == 2 })

	var want []string
	for i := range 10 {
		ts, err := sim.DM(ws.TeamID, ws.UserIDs[0], fmt.Sprint("msg ", i), "")
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, ts)
	}
	// All ten read and at the committer: in the held Record or queued
	// behind it.
	waitFor(t, 5*time.Second, "all ten at the committer", func() bool {
		return rec.heldMessages() > 0 && rec.heldMessages()+len(m.intake.commits) == 10
	})
	if n := sim.Unacked(); n != 10 {
		t.Errorf("%d unacked while Record is held, want 10", n)
	}
	if n := value(mx.EnvelopesAcked); n != 0 {
		t.Errorf("%v acks while Record is held", n)
	}
	for _, st := range sim.Envelopes() {
		if st.Retries != 0 || !st.Acked.IsZero() {
			t.Errorf("envelope %s: retries %d, acked %v", st.EnvelopeID, st.Retries, st.Acked)
		}
	}

	rec.release()
	got := collect(t, m, 5*time.Second, want...)
	waitFor(t, 3*time.Second, "all acked", func() bool {
		return sim.Unacked() == 0 && acks.count() == 10 && value(mx.EnvelopesAcked) == 10
	})
	for _, ts := range want {
		if len(got[ts]) != 1 {
			t.Errorf("%s recorded %d times", ts, len(got[ts]))
		}
	}
	for _, st := range sim.Envelopes() {
		if st.Retries != 0 {
			t.Errorf("envelope %s redelivered %d times", st.EnvelopeID, st.Retries)
		}
	}
	acks.check(t)
	// The held record, then at most one for those queued behind it (the
	// held one may have taken them all).
	if batches, _ := rec.calls(); len(batches) > 2 {
		t.Errorf("Record calls %v, want at most 2", batches)
	}
}

// A failed record leaves its envelopes unacked: Slack redelivers them, and
// once the recorder works again the redeliveries are recorded and acked.
func TestManagerFailedRecordLeftForRedelivery(t *testing.T) {
	t.Parallel()
	sim, ws, src := oneWorkspace(t, slacksim.WithAckTimeout(500*time.Millisecond))
	mx := metrics.New()
	rec := newRecorder()
	rec.fail(errors.New("redis and spool down"))
	acks := watchAcks(sim, rec)
	m := startManager(t, sim, ManagerConfig{Source: src.list, Metrics: mx, Recorder: rec})
	waitFor(t, 5*time.Second, "sockets", func() bool { return sim.Connections(ws.AppID) == 2 })

	var want []string
	for i := range 5 {
		ts, err := sim.DM(ws.TeamID, ws.UserIDs[0], fmt.Sprint("msg ", i), "")
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, ts)
	}
	waitFor(t, 5*time.Second, "every envelope redelivered", func() bool {
		envs := sim.Envelopes()
		return len(envs) == 5 && !slices.ContainsFunc(envs, func(st slacksim.EnvelopeStat) bool { return st.Retries == 0 })
	})
	if n := sim.Unacked(); n != 5 {
		t.Errorf("%d unacked while Record fails, want 5", n)
	}
	if got := rec.recorded(); len(got) != 0 {
		t.Errorf("recorded %d messages while Record fails", len(got))
	}
	if n := value(mx.IntakeRecordFailed); n < 5 {
		t.Errorf("record failures counted %v, want at least 5", n)
	}

	rec.fail(nil)
	got := collect(t, m, 5*time.Second, want...)
	waitFor(t, 3*time.Second, "all acked", func() bool { return sim.Unacked() == 0 && acks.count() == 5 })
	for _, ts := range want {
		for _, msg := range got[ts] {
			if msg.RetryAttempt == 0 {
				t.Errorf("%s recorded from its first delivery, which failed", ts)
			}
		}
	}
	acks.check(t)
}

// What Ignore says the router would drop (here top-level channel chatter)
// is acked without a record, its outcome counted; what is addressed to the
// bot is recorded.
func TestManagerIgnoredAckedWithoutRecord(t *testing.T) {
	t.Parallel()
	sim, ws, src := oneWorkspace(t)
	mx := metrics.New()
	chatter := func(msg konstruct.Message) (string, bool) {
		if !msg.IsMention && !msg.IsDM && !msg.InThread() {
			return "not_addressed", true
		}
		return "", false
	}
	m := startManager(t, sim, ManagerConfig{Source: src.list, Metrics: mx, Ignore: chatter})
	rec := recOf(m)
	waitFor(t, 5*time.Second, "sockets", func() bool { return sim.Connections(ws.AppID) == 2 })

	var root string
	for i := range 5 {
		ts, err := sim.Post(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], fmt.Sprint("lunch ", i), "")
		if err != nil {
			t.Fatal(err)
		}
		root = ts
	}
	waitFor(t, 3*time.Second, "chatter acked", func() bool { return sim.Unacked() == 0 })
	if batches, failed := rec.calls(); len(batches)+failed != 0 {
		t.Errorf("chatter cost %d Record calls", len(batches)+failed)
	}
	if o := outcomes(t, mx); o["not_addressed"] != 5 {
		t.Errorf("outcomes %v, want not_addressed 5", o)
	}

	// A mention comes as an app_mention (recorded) and a message twin
	// (chatter); a reply in a thread is recorded.
	mention, _ := sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[1], "summarize", "")
	reply, _ := sim.Post(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "and this?", root)
	got := collect(t, m, 5*time.Second, mention, reply)
	waitFor(t, 3*time.Second, "all acked", func() bool { return sim.Unacked() == 0 })
	if len(got[mention]) != 1 || !got[mention][0].IsMention || len(got[reply]) != 1 || got[reply][0].ThreadTS != root {
		t.Errorf("recorded %+v", got)
	}
	if all := rec.recorded(); len(all) != 2 {
		t.Errorf("recorded %d messages, want the mention and the reply", len(all))
	}
	if o := outcomes(t, mx); o["not_addressed"] != 6 || len(o) != 1 {
		t.Errorf("outcomes %v, want not_addressed 6 (5 posts and the mention's twin)", o)
	}
}

// app_uninstalled and tokens_revoked naming the bot token mark the team
// revoked (OnRevoked) and reconcile at once; both are acked. A
// tokens_revoked of user tokens only is acked and changes nothing.
func TestManagerRevocationEvents(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		ev      map[string]any
		revoked bool
	}{
		{"app_uninstalled", map[string]any{"type": "app_uninstalled"}, true},
		{"bot token revoked", map[string]any{"type": "tokens_revoked", "tokens": map[string]any{"oauth": []string{"U0USER1"}, "bot": []string{"U0BOT1"}}}, true},
		{"user tokens revoked", map[string]any{"type": "tokens_revoked", "tokens": map[string]any{"oauth": []string{"U0USER1"}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Two workspaces of one app: losing one keeps the socket.
			sim := newSim(t)
			lost := sim.AddWorkspace(slacksim.WorkspaceSpec{})
			kept := sim.AddWorkspace(slacksim.WorkspaceSpec{AppID: lost.AppID, AppToken: lost.AppToken})
			src := &source{}
			src.set(workspaceOf(lost), workspaceOf(kept))
			var mu sync.Mutex
			var revoked, acked []string
			// One socket and one classifier: envelopes are classified in
			// the order sent. No periodic reconcile: only Trigger.
			m := startManagerWith(t, sim, ManagerConfig{Source: src.list, ConnectionsPerWorkspace: 1, Normalizers: 1, ReconcileEvery: time.Hour,
				OnRevoked: func(ctx context.Context, team string) {
					mu.Lock()
					revoked = append(revoked, team)
					mu.Unlock()
					src.revoke(ctx, team)
				}}, func(m *Manager) {
				m.dropAck = func(id string) bool {
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
					return false
				}
			})
			waitFor(t, 5*time.Second, "socket", func() bool { return sim.Connections(lost.AppID) == 1 && len(m.States()) == 2 })
			reconciles := src.calls.Load()

			sim.SendRaw(lost.AppID, rawEvent(lost, "rv-1", "EvRevoke1", tc.ev))
			// A DM sent after it is recorded after it was handled.
			ts, _ := sim.DM(kept.TeamID, kept.UserIDs[0], "after", "")
			collect(t, m, 5*time.Second, ts)
			mu.Lock()
			gotRevoked, gotAcked := slices.Clone(revoked), slices.Clone(acked)
			mu.Unlock()
			if !slices.Contains(gotAcked, "rv-1") {
				t.Errorf("revocation event not acked: acks %v", gotAcked)
			}
			if !tc.revoked {
				if len(gotRevoked) != 0 {
					t.Errorf("OnRevoked for %v", gotRevoked)
				}
				if n := src.calls.Load() - reconciles; n != 0 {
					t.Errorf("%d reconciles", n)
				}
				if st := m.States(); len(st) != 2 {
					t.Errorf("States = %+v", st)
				}
				return
			}
			if !slices.Equal(gotRevoked, []string{lost.TeamID}) {
				t.Errorf("OnRevoked for %v, want [%s]", gotRevoked, lost.TeamID)
			}
			waitFor(t, 3*time.Second, "reconciled without the lost team", func() bool {
				st := m.States()
				return len(st) == 1 && st[0].TeamID == kept.TeamID
			})
			if src.calls.Load() == reconciles {
				t.Error("no reconcile after the revocation")
			}
			if n := sim.Connections(lost.AppID); n != 1 {
				t.Errorf("%d sockets for the app the kept team still uses, want 1", n)
			}
		})
	}
}

// Group commit: envelopes that arrive while a record is in flight share
// the next one, and each is acked once.
func TestManagerGroupCommit(t *testing.T) {
	t.Parallel()
	const n = 200
	sim, ws, src := oneWorkspace(t, slacksim.WithAckTimeout(10*time.Second))
	mx := metrics.New()
	rec := newRecorder()
	rec.hold()
	acks := watchAcks(sim, rec)
	m := startManager(t, sim, ManagerConfig{Source: src.list, Metrics: mx, Recorder: rec, RecordTimeout: 10 * time.Second})
	waitFor(t, 5*time.Second, "sockets", func() bool { return sim.Connections(ws.AppID) == 2 })

	var posts sync.WaitGroup
	for i := range n {
		posts.Go(func() {
			if _, err := sim.DM(ws.TeamID, ws.UserIDs[i%len(ws.UserIDs)], fmt.Sprint("msg ", i), ""); err != nil {
				t.Error(err)
			}
		})
	}
	posts.Wait()
	start := time.Now()
	waitFor(t, 10*time.Second, "all at the committer", func() bool {
		return rec.heldMessages() > 0 && rec.heldMessages()+len(m.intake.commits) == n
	})
	rec.release()
	waitFor(t, 10*time.Second, "all recorded and acked", func() bool {
		return len(rec.recorded()) == n && sim.Unacked() == 0 && acks.count() == n && value(mx.EnvelopesAcked) == n
	})
	elapsed := time.Since(start)

	batches, failed := rec.calls()
	t.Logf("%d envelopes in %d Record calls %v; recorded and acked %v after they were all read", n, len(batches), batches, elapsed.Round(time.Millisecond))
	if len(batches) >= n || failed != 0 {
		t.Errorf("Record calls %v (%d failed): want fewer calls than envelopes", batches, failed)
	}
	// The held record, then at most one for all that queued behind it.
	if len(batches) > 2 {
		t.Errorf("Record calls %v, want at most 2", batches)
	}
	for _, st := range sim.Envelopes() {
		if st.Acked.IsZero() || st.Retries != 0 || rec.count(st.EventID) != 1 {
			t.Errorf("envelope %s: acked %v, retries %d, recorded %d times", st.EnvelopeID, st.Acked, st.Retries, rec.count(st.EventID))
		}
	}
	acks.check(t)
}
