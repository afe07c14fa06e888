package queue_test

import (
	"context"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/queue"
)

const tenantA = "00000000-0000-4000-8000-00000000000a"

func job(team, ts string, enqueued time.Time) konstruct.ReplyJob {
	return konstruct.ReplyJob{
		Message:    konstruct.Message{TenantID: tenantA, TeamID: team, ChannelID: "C1", TS: ts, EventID: "Ev" + ts, Text: "secret question"},
		EnqueuedAt: enqueued,
	}
}

// TestOperatorSeesAndSteersTheQueue: stats, per-workspace backlog (jobs
// waiting their turn included) and the oldest wait, listing, archiving and
// retrying through the Inspector, as `konstruct status` and `konstruct
// queue` use them.
func TestOperatorSeesAndSteersTheQueue(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rd := testenv.NewRedis(t)
	q := rd.NewQueue(t, queue.Config{ShutdownTimeout: 100 * time.Millisecond})

	// A never-used queue is empty, not an error.
	if info, err := q.Info(ctx); err != nil || info.Pending != 0 || info.Name != rd.Prefix+"replies" {
		t.Fatalf("Info of an unused queue = %+v, %v", info, err)
	}
	if b, err := q.Backlog(ctx, 0); err != nil || len(b.Teams) != 0 || b.Oldest != 0 {
		t.Fatalf("Backlog of an unused queue = %+v, %v", b, err)
	}

	// No worker yet: the jobs wait for their turn.
	now := time.Now()
	for _, j := range []konstruct.ReplyJob{
		job("T1", "1.1", now.Add(-2*time.Minute)),
		job("T1", "1.2", now),
		job("T2", "2.1", now),
	} {
		if err := q.Enqueue(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	b, err := q.Backlog(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b.Teams["T1"].Queued != 2 || b.Teams["T2"].Queued != 1 || b.Waiting != 3 || b.Partial {
		t.Errorf("Backlog = %+v, want T1: 2 queued, T2: 1, 3 waiting", b)
	}
	if b.Oldest < 2*time.Minute || b.Oldest > 3*time.Minute {
		t.Errorf("oldest wait %v, want about 2m", b.Oldest)
	}
	if old, err := q.OldestWaiting(ctx); err != nil || old < 2*time.Minute {
		t.Errorf("OldestWaiting = %v, %v", old, err)
	}

	// A worker with room for one takes the oldest job and holds it.
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		served <- q.Serve(sctx, 1, func(ctx context.Context, _ konstruct.ReplyJob, _ konstruct.Delivery) error {
			<-ctx.Done()
			return ctx.Err()
		})
	}()
	waitUntil(t, "a running task", func() bool {
		b, err = q.Backlog(ctx, 0)
		return err == nil && b.Teams["T1"].Running == 1
	})
	if b.Teams["T1"].Queued != 1 || b.Teams["T2"].Queued != 1 || b.Waiting != 2 {
		t.Errorf("Backlog with one running = %+v", b)
	}
	active, err := q.Tasks(ctx, queue.StateActive, 0)
	if err != nil || len(active) != 1 || active[0].Post.TS != "1.1" || active[0].Post.TeamID != "T1" ||
		active[0].EnqueuedAt.IsZero() || active[0].MaxRetry != queue.TaskMaxRetry {
		t.Fatalf("active tasks = %+v, %v", active, err)
	}
	id := active[0].ID
	if err := q.ArchiveTask(ctx, id); konstruct.ErrorCode(err) != konstruct.ECONFLICT {
		t.Errorf("archiving a running task: %v, want ECONFLICT", err)
	}
	// Stopped, the worker hands its task back to the queue.
	stop()
	<-served
	if info, _ := q.Info(ctx); info.Pending != 1 {
		t.Fatalf("after the worker stopped: %+v", info.Stats)
	}
	if _, err := q.Tasks(ctx, "stuck", 0); konstruct.ErrorCode(err) != konstruct.EINVALID {
		t.Errorf("Tasks of an unknown state: %v, want EINVALID", err)
	}

	// Archive it, refuse it twice, then retry it.
	if err := q.ArchiveTask(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := q.ArchiveTask(ctx, id); konstruct.ErrorCode(err) != konstruct.ECONFLICT {
		t.Errorf("archiving an archived task: %v, want ECONFLICT", err)
	}
	if err := q.ArchiveTask(ctx, "reply:nope"); konstruct.ErrorCode(err) != konstruct.ENOTFOUND {
		t.Errorf("archiving an unknown task: %v, want ENOTFOUND", err)
	}
	if info, _ := q.Info(ctx); info.Archived != 1 || info.Pending != 0 {
		t.Errorf("after archive: %+v", info.Stats)
	}
	if b, _ := q.Backlog(ctx, 0); b.Teams["T1"].Queued != 1 || b.Teams["T1"].Running != 0 || b.Waiting != 2 {
		t.Errorf("Backlog counts an archived task: %+v", b)
	}
	arch, _ := q.Tasks(ctx, queue.StateArchived, 0)
	if len(arch) != 1 || arch[0].ID != id {
		t.Errorf("archived tasks %+v", arch)
	}
	if err := q.RetryTask(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := q.RetryTask(ctx, id); konstruct.ErrorCode(err) != konstruct.ECONFLICT {
		t.Errorf("retrying a pending task: %v, want ECONFLICT", err)
	}

	// Everything at once.
	if n, err := q.ArchiveAll(ctx, queue.StatePending, queue.StateRetry, queue.StateScheduled); err != nil || n != 1 {
		t.Errorf("ArchiveAll = %d, %v; want 1", n, err)
	}
	if _, err := q.ArchiveAll(ctx, queue.StateActive); konstruct.ErrorCode(err) != konstruct.EINVALID {
		t.Errorf("archiving active tasks: %v, want EINVALID", err)
	}
	if n, err := q.RetryAll(ctx); err != nil || n != 1 {
		t.Errorf("RetryAll = %d, %v; want 1", n, err)
	}
	if info, _ := q.Info(ctx); info.Pending != 1 || info.Archived != 0 {
		t.Errorf("after retry all: %+v", info.Stats)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestInFlightCountsRepliesPerWorkspace: a reply a worker tracks counts
// for its workspace until it is done.
func TestInFlightCountsRepliesPerWorkspace(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rd := testenv.NewRedis(t)
	q := rd.NewQueue(t, queue.Config{})
	post := konstruct.Post{TenantID: tenantA, TeamID: "T9", ChannelID: "C1", TS: "9.9"}
	lease, err := q.AcquireReply(ctx, post, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release(ctx)
	if err := lease.Track(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := q.InFlight(ctx); err != nil || got["T9"] != 1 || len(got) != 1 {
		t.Fatalf("InFlight = %v, %v", got, err)
	}
	if err := q.SaveReply(ctx, konstruct.ReplyState{Post: post, Stage: konstruct.StageDone}); err != nil {
		t.Fatal(err)
	}
	if got, err := q.InFlight(ctx); err != nil || len(got) != 0 {
		t.Fatalf("InFlight after done = %v, %v", got, err)
	}
}

// TestListPrefixesFindsARunsKeys: the keys and queue of a run are found by
// their prefix pattern, so a later run can purge what it left.
func TestListPrefixesFindsARunsKeys(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rd := testenv.NewRedis(t)
	q := rd.NewQueue(t, queue.Config{})
	if err := q.Enqueue(ctx, job("T1", "1.1", time.Now())); err != nil {
		t.Fatal(err)
	}
	// Only asynq's keys exist: the prefix is found through them.
	all := rd.NewQueue(t, queue.Config{})
	found, err := all.ListPrefixes(ctx, regexp.MustCompile(`^kt:[0-9a-f]{12}:`))
	if err != nil || !slices.Contains(found, rd.Prefix) {
		t.Fatalf("ListPrefixes = %v, %v; want %s among them", found, err, rd.Prefix)
	}
	if _, err := all.ListPrefixes(ctx, regexp.MustCompile(`[a-z]+:`)); err == nil {
		t.Error("a pattern without a literal start was accepted")
	}
	if err := q.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	found, err = all.ListPrefixes(ctx, regexp.MustCompile(`^`+regexp.QuoteMeta(rd.Prefix)))
	if err != nil || len(found) != 0 {
		t.Errorf("after Purge, ListPrefixes = %v, %v", found, err)
	}
}
