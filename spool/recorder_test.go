package spool_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/spool"
)

// recording is a sequence of messages recorded in one order; their event
// ids say which.
type recording struct {
	mu    sync.Mutex
	n     int
	order []string
}

// batch returns the next n messages (event ids evt-000001, …).
func (r *recording) batch(n int) []konstruct.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]konstruct.Message, n)
	for i := range out {
		r.n++
		out[i] = konstruct.Message{
			TeamID: "T1", EventID: fmt.Sprintf("evt-%06d", r.n), EventType: "app_mention",
			ChannelID: "C1", User: "U1", Text: "hello", TS: fmt.Sprintf("1700000000.%06d", r.n),
			IsMention: true, ReceivedAt: time.Now(),
		}
	}
	return out
}

// record records msgs and notes their order once they are recorded.
func (r *recording) record(t *testing.T, rec *spool.Recorder, msgs []konstruct.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rec.Record(ctx, msgs); err != nil {
		t.Fatalf("record %d messages: %v", len(msgs), err)
	}
	r.mu.Lock()
	for _, m := range msgs {
		r.order = append(r.order, m.EventID)
	}
	r.mu.Unlock()
}

func (r *recording) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.order...)
}

// readStream reads the whole intake stream, in stream order, as one new
// consumer of the router's group sees it.
func readStream(t *testing.T, q *queue.Queue, want int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ids []string
	for len(ids) < want && ctx.Err() == nil {
		recs, err := q.ReadIntake(ctx, "order-check", 500, 0, "")
		if err != nil {
			t.Fatalf("read intake: %v", err)
		}
		if len(recs) == 0 {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		for _, rec := range recs {
			ids = append(ids, rec.Message.EventID)
		}
	}
	return ids
}

// waitDrained waits until the spool is empty (replayed into Redis).
func waitDrained(t *testing.T, sp *spool.Spool, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for sp.Len() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the spool still holds %d records %v after Redis came back", sp.Len(), d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at %d: got %s, want %s (got %d records, want %d)", i, a[i], b[i], len(a), len(b))
		}
	}
	return fmt.Sprintf("got %d records, want %d", len(a), len(b))
}

// TestSpoolReplaysInOrderAfterAnOutage records through a Redis outage: what
// is recorded before it goes to the stream, what is recorded during it to
// the spool, and what is recorded while the spool is being replayed waits
// behind it. The stream ends up holding every record once, in the order
// the Recorder acknowledged them.
func TestSpoolReplaysInOrderAfterAnOutage(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedisServer(t)
	q, err := queue.Open(queue.Config{URL: srv.URL, Prefix: "kt:spool:"})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	sp := openSpool(t, t.TempDir(), spool.Options{})
	// A small replay batch: the replay takes many steps, and records made
	// meanwhile interleave with them.
	rec := spool.NewRecorder(q, sp, spool.RecorderConfig{Deadline: 100 * time.Millisecond, ReplayEvery: 20 * time.Millisecond, ReplayBatch: 7})
	ctx, cancel := context.WithCancel(context.Background())
	var run sync.WaitGroup
	defer func() {
		cancel()
		run.Wait()
	}()

	var r recording
	for i := range 20 {
		r.record(t, rec, r.batch(1+i%4))
	}
	if sp.Len() != 0 {
		t.Fatalf("Redis answers, yet %d records went to the spool", sp.Len())
	}
	before := len(r.ids())

	srv.Stop()
	for i := range 40 {
		r.record(t, rec, r.batch(1+i%5))
	}
	spooled := len(r.ids()) - before
	if sp.Len() != spooled {
		t.Fatalf("during the outage the spool holds %d records, want the %d recorded", sp.Len(), spooled)
	}

	// Redis is back: records keep coming while the replay runs. (The
	// replay loop starts only now: while Redis is down its attempts fail
	// before they touch the spool, so they cannot change the order — and
	// each takes go-redis's ~1.7 s of dial retries, see
	// TestRecordDuringAnOutageDoesNotWaitForRedis.)
	srv.Start()
	run.Go(func() { _ = rec.Run(ctx) })
	var during sync.WaitGroup
	during.Go(func() {
		for i := range 60 {
			r.record(t, rec, r.batch(1+i%3))
			time.Sleep(time.Millisecond)
		}
	})
	during.Wait()
	waitDrained(t, sp, 10*time.Second)
	// Once drained, records go to Redis directly again.
	for i := range 5 {
		r.record(t, rec, r.batch(1+i))
	}
	if sp.Len() != 0 {
		t.Fatalf("after the replay, %d new records went to the spool", sp.Len())
	}

	want := r.ids()
	got := readStream(t, q, len(want))
	if !slices.Equal(got, want) {
		t.Fatalf("the intake stream is not in the order the records were acknowledged: %s", firstDiff(got, want))
	}
	t.Logf("%d records: %d before the outage, %d spooled during it, %d after; stream order = record order", len(want), before, spooled, len(want)-before-spooled)
}

// TestSpoolOfAKilledProcessIsReplayedFirst: a process recorded to the spool
// while Redis was down and died (its spool file closed as is). The next
// process on the same state directory replays those records into Redis
// before anything it records itself.
func TestSpoolOfAKilledProcessIsReplayedFirst(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedisServer(t)
	q, err := queue.Open(queue.Config{URL: srv.URL, Prefix: "kt:spool:"})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	dir := t.TempDir()

	var r recording
	r.record(t, spool.NewRecorder(q, openSpool(t, t.TempDir(), spool.Options{}), spool.RecorderConfig{}), r.batch(3)) // to Redis
	srv.Stop()
	sp, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	first := spool.NewRecorder(q, sp, spool.RecorderConfig{Deadline: 50 * time.Millisecond})
	for i := range 10 {
		r.record(t, first, r.batch(1+i%3))
	}
	if sp.Len() == 0 {
		t.Fatal("nothing went to the spool while Redis was down")
	}
	_ = sp.Close() // the process dies: no replay ran

	srv.Start()
	sp2 := openSpool(t, dir, spool.Options{})
	if sp2.Len() == 0 {
		t.Fatal("the reopened spool is empty")
	}
	second := spool.NewRecorder(q, sp2, spool.RecorderConfig{ReplayEvery: 20 * time.Millisecond, ReplayBatch: 4})
	// Recorded before the replay starts: must land after the old records.
	r.record(t, second, r.batch(2))
	ctx, cancel := context.WithCancel(context.Background())
	var run sync.WaitGroup
	run.Go(func() { _ = second.Run(ctx) })
	defer func() {
		cancel()
		run.Wait()
	}()
	waitDrained(t, sp2, 10*time.Second)
	r.record(t, second, r.batch(2))

	want := r.ids()
	if got := readStream(t, q, len(want)); !slices.Equal(got, want) {
		t.Fatalf("intake stream order after a restart: %s", firstDiff(got, want))
	}
}

// TestRecordDuringAnOutageDoesNotWaitForRedis: while Redis is down, a record
// goes to the spool, and the gateway acks it, in the time of a disk write —
// not in the time of a failed Redis call. (Record is on the ack path: Slack
// redelivers what is not acked within 3 s.)
func TestRecordDuringAnOutageDoesNotWaitForRedis(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedisServer(t)
	q, err := queue.Open(queue.Config{URL: srv.URL, Prefix: "kt:spool:"})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	sp := openSpool(t, t.TempDir(), spool.Options{})
	const deadline = 200 * time.Millisecond
	rec := spool.NewRecorder(q, sp, spool.RecorderConfig{Deadline: deadline})
	ctx, cancel := context.WithCancel(context.Background())
	var run sync.WaitGroup
	run.Go(func() { _ = rec.Run(ctx) })
	defer func() {
		cancel()
		run.Wait()
	}()

	var r recording
	r.record(t, rec, r.batch(2))
	srv.Stop()
	r.record(t, rec, r.batch(2)) // finds Redis down, within the deadline
	var took []time.Duration
	for range 20 {
		start := time.Now()
		r.record(t, rec, r.batch(3))
		took = append(took, time.Since(start))
		time.Sleep(50 * time.Millisecond)
	}
	slices.Sort(took)
	// A replay waiting on the dead Redis takes ~1.7 s (go-redis's dial
	// retries); a spooled record, one fsync. The bound is far from both.
	if worst := took[len(took)-1]; worst > 5*deadline {
		t.Errorf("during the outage Record took up to %v (median %v): the ack waits on Redis anyway",
			worst, took[len(took)/2])
	}
}
