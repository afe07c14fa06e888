package queue_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/queue"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func jobOf(tenant, ts string) konstruct.ReplyJob {
	return konstruct.ReplyJob{Message: konstruct.Message{TenantID: tenant, TeamID: "T" + tenant, ChannelID: "C1", TS: ts}}
}

func postOf(tenant, ts string) konstruct.Post {
	return konstruct.Post{TenantID: tenant, TeamID: "T" + tenant, ChannelID: "C1", TS: ts}
}

// register pretends a worker process of the given concurrency is alive.
func register(t *testing.T, q *queue.Queue, id string, n int) {
	if err := q.RegisterWorkers(ctxT(t), id, n); err != nil {
		t.Fatal(err)
	}
}

// admitted dispatches and returns the tenants of the jobs admitted, in order.
func admitted(t *testing.T, q *queue.Queue) []string {
	t.Helper()
	before, _ := q.Pending()
	if _, err := q.Dispatch(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	after, _ := q.Pending()
	var out []string
	for _, p := range after[len(before):] {
		out = append(out, p.TenantID)
	}
	return out
}

func TestFairAdmission(t *testing.T) {
	t.Parallel()
	rd := testenv.NewRedis(t)
	q := rd.NewQueue(t, queue.Config{})
	register(t, q, "w1", 10) // a reserve of 1: 9 for tenants already running
	for i := range 20 {
		for _, tenant := range []string{"A", "B"} {
			if err := q.Enqueue(ctxT(t), jobOf(tenant, fmt.Sprintf("1.%03d", i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Two busy tenants: taken in turn, each up to its share, the reserve
	// left free.
	got := admitted(t, q)
	if len(got) != 8 || got[0] == got[1] {
		t.Fatalf("admitted %v: want 8, alternating", got)
	}
	if err := q.Enqueue(ctxT(t), jobOf("A", "1.000")); konstruct.ErrorCode(err) != konstruct.ECONFLICT {
		t.Errorf("a second job for a post: %v, want ECONFLICT", err)
	}
	// A third tenant's question goes ahead of both backlogs at once.
	if err := q.Enqueue(ctxT(t), jobOf("C", "2.000")); err != nil {
		t.Fatal(err)
	}
	if got := admitted(t, q); len(got) != 1 || got[0] != "C" {
		t.Fatalf("admitted %v: want C's job", got)
	}
	// Nothing more until jobs end; then the room goes to whoever is below
	// its share of three busy tenants (3 each): A, once, not B.
	if got := admitted(t, q); len(got) != 0 {
		t.Fatalf("admitted %v with no room", got)
	}
	q.Finish(ctxT(t), postOf("A", "1.000"))
	q.Finish(ctxT(t), postOf("A", "1.001"))
	if got := admitted(t, q); len(got) != 1 || got[0] != "A" {
		t.Fatalf("admitted %v: want one of A's (up to its share of three), none of B's", got)
	}
	// C is done: two busy tenants again, A below its share.
	q.Finish(ctxT(t), postOf("C", "2.000"))
	if got := admitted(t, q); len(got) == 0 || got[0] != "A" {
		t.Fatalf("admitted %v: want A's next", got)
	}
	if st, err := q.TaskState(ctxT(t), postOf("B", "1.019")); err != nil || st != "waiting" {
		t.Errorf("a job not admitted yet: %q, %v", st, err)
	}
}

func TestEstimateWait(t *testing.T) {
	t.Parallel()
	rd := testenv.NewRedis(t)
	q := rd.NewQueue(t, queue.Config{})
	if d, err := q.EstimateWait(ctxT(t), "A"); err != nil || d != 0 {
		t.Fatalf("no worker yet: %v, %v", d, err)
	}
	register(t, q, "w1", 2)
	q.ObserveReply(ctxT(t), 4*time.Second)
	if d, _ := q.EstimateWait(ctxT(t), "A"); d != 0 {
		t.Errorf("nothing ahead: %v", d)
	}
	for i := range 5 {
		_ = q.Enqueue(ctxT(t), jobOf("A", fmt.Sprintf("1.%03d", i)))
	}
	// Share 1 (of 2 workers, 1 in reserve): 5 ahead, 4 s each.
	if d, _ := q.EstimateWait(ctxT(t), "A"); d != 20*time.Second {
		t.Errorf("estimate %v, want 20s", d)
	}
}

func TestSlackBudgetPriorities(t *testing.T) {
	t.Parallel()
	rd := testenv.NewRedis(t)
	clock := time.Now()
	q := rd.NewQueue(t, queue.Config{SlackTiers: map[string]queue.SlackTier{"chat.update": {PerMinute: 6, Burst: 6}}, Now: func() time.Time { return clock }})
	take := func(p konstruct.Priority) time.Duration {
		d, err := q.TakeSlack(ctxT(t), "T1", "C1", "chat.update", p)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// A burst of 6: streaming edits leave 2 (a third) to the others.
	for i := range 4 {
		if d := take(konstruct.PriorityInterim); d != 0 {
			t.Fatalf("interim #%d waits %v", i+1, d)
		}
	}
	if d := take(konstruct.PriorityInterim); d == 0 {
		t.Fatal("a fifth interim edit took the reserve")
	}
	if d := take(konstruct.PriorityPlaceholder); d != 0 {
		t.Fatalf("placeholder waits %v", d)
	}
	if d := take(konstruct.PriorityPlaceholder); d == 0 {
		t.Fatal("a placeholder took the last write")
	}
	if d := take(konstruct.PriorityFinal); d != 0 {
		t.Fatalf("the final answer waits %v", d)
	}
	if d := take(konstruct.PriorityFinal); d < 9*time.Second || d > 10*time.Second {
		t.Fatalf("past the burst a final waits %v, want ~10 s (6/min)", d)
	}
	// A 429 pauses the method for everyone, however much budget is left.
	clock = clock.Add(time.Minute)
	if err := q.PauseSlack(ctxT(t), "T1", "chat.update", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := take(konstruct.PriorityFinal); d <= 0 || d > 3*time.Second {
		t.Errorf("paused: a final waits %v, want up to 3 s", d)
	}
	if d, _ := q.TakeSlack(ctxT(t), "T2", "C1", "chat.update", konstruct.PriorityFinal); d != 0 {
		t.Errorf("another workspace waits %v", d)
	}
}

func TestLLMSlotsFair(t *testing.T) {
	t.Parallel()
	rd := testenv.NewRedis(t)
	q := rd.NewQueue(t, queue.Config{})
	ctx := ctxT(t)
	var held []func()
	for range 2 {
		release, err := q.AcquireLLM(ctx, "p", "A", 2)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, release)
	}
	// C waits; A frees a slot and asks again: C gets it.
	cGot := make(chan func(), 1)
	go func() {
		release, err := q.AcquireLLM(ctx, "p", "C", 2)
		if err == nil {
			cGot <- release
		}
	}()
	for {
		w, _ := q.LLMWaiting(ctx, "p")
		if len(w) == 2 || (len(w) == 1 && w[0] == "C") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	held[0]()
	aCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	aGot := make(chan error, 1)
	go func() {
		release, err := q.AcquireLLM(aCtx, "p", "A", 2)
		if err == nil {
			defer release()
		}
		aGot <- err
	}()
	select {
	case release := <-cGot:
		release()
	case <-time.After(5 * time.Second):
		t.Fatal("C never got the freed slot")
	}
	held[1]()
	if err := <-aGot; err != nil {
		t.Errorf("A after C: %v", err)
	}
}

// TestLLMSlotsNotIdleBehindShares: a tenant served at once does not count
// as waiting afterwards; two tenants flooding share every slot but the
// reserve; a tenant that starts asking gets the reserve at once; a flooding
// tenant past its share does not take a freed slot from the reserve, the
// newcomer does.
func TestLLMSlotsNotIdleBehindShares(t *testing.T) {
	t.Parallel()
	rd := testenv.NewRedis(t)
	q := rd.NewQueue(t, queue.Config{})
	ctx := ctxT(t)
	const slots = 20 // a reserve of 2

	// C is served at once and lets go: not a waiter.
	release, err := q.AcquireLLM(ctx, "p", "C", slots)
	if err != nil {
		t.Fatal(err)
	}
	release()
	if w, _ := q.LLMWaiting(ctx, "p"); len(w) != 0 {
		t.Errorf("waiting after an immediate grant: %v", w)
	}

	held := map[string][]func(){}
	take := func(tenant string) bool {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		release, err := q.AcquireLLM(actx, "p", tenant, slots)
		if err != nil {
			return false
		}
		held[tenant] = append(held[tenant], release)
		return true
	}
	defer func() {
		for _, rs := range held {
			for _, r := range rs {
				r()
			}
		}
	}()
	// A and B flood: 9 each, the reserve of 2 free.
	for i := range 24 {
		take([]string{"A", "B"}[i%2])
	}
	if len(held["A"]) != 9 || len(held["B"]) != 9 {
		t.Fatalf("floods took A %d, B %d of %d slots, want 9 each (the reserve of 2 free)", len(held["A"]), len(held["B"]), slots)
	}
	// D starts asking: the reserve, at once, twice (under its share).
	if !take("D") || !take("D") {
		t.Fatal("a newcomer waited although the reserve was free")
	}
	// A slot of A's frees: A, past its share of 6, does not take it back
	// (it belongs to the reserve now); D does.
	held["A"][0]()
	held["A"] = held["A"][1:]
	if take("A") {
		t.Errorf("a flooding tenant past its share took a slot of the reserve")
	}
	if !take("D") {
		t.Errorf("the newcomer did not get the freed slot")
	}
}
