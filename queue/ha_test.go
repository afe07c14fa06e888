package queue_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/queue"
)

// The queue on Redis as installs that outgrow one machine run it: a Redis
// Cluster (every step, its keys spread over the masters) and a master
// behind Sentinel failed over under load (nothing a caller was told is
// written is lost).

// randomPrefix is a key prefix of the test's own (its Redis is its own too).
func randomPrefix() string {
	return fmt.Sprintf("kt:%x:", time.Now().UnixNano()&0xffffffffff)
}

// TestClusterRunsEveryStep runs every kind of step the product takes —
// claims, threads, rate limits, reply states and leases, the janitor's
// index, the intake stream and its consumer group, fair admission and the
// reply tasks through asynq, Slack budgets, LLM slots, the gateways'
// leases, the operator's views and purge — on a three-master Redis
// Cluster: no CROSSSLOT, no script reaching a key of another slot, and the
// install's keys spread over the masters.
func TestClusterRunsEveryStep(t *testing.T) {
	t.Parallel()
	cl := testenv.StartRedisCluster(t, 3)
	prefix := randomPrefix()
	q, err := queue.Open(queue.Config{URL: "redis://localhost/0", ClusterAddrs: cl.Addrs, Prefix: prefix, OrphanAfter: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	ctx := ctxT(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	tenants := []string{"t-alpha", "t-bravo", "t-charlie", "t-delta", "t-echo", "t-foxtrot"}
	var posts []konstruct.Post
	for i, tenant := range tenants {
		p := konstruct.Post{TenantID: tenant, TeamID: "T" + tenant, ChannelID: "C1", TS: fmt.Sprintf("1.%06d", i)}
		posts = append(posts, p)
		if dup, err := q.Claim(ctx, p, "Ev"+tenant, "rec-"+tenant); err != nil || dup {
			t.Fatalf("claim: dup %v, %v", dup, err)
		}
		if dup, err := q.Claim(ctx, p, "Ev"+tenant, "other"); err != nil || !dup {
			t.Fatalf("second claim: dup %v, %v", dup, err)
		}
		must(q.Engage(ctx, tenant, "C1", p.TS))
		if ok, err := q.Engaged(ctx, tenant, "C1", p.TS); err != nil || !ok {
			t.Fatalf("engaged: %v %v", ok, err)
		}
		if l, err := q.Allow(ctx, tenant, "C1", "U1"); err != nil || !l.OK {
			t.Fatalf("allow: %+v %v", l, err)
		}
		st, err := q.BeginReply(ctx, konstruct.ReplyState{Post: p, ThreadTS: p.TS, Stage: konstruct.StageQueued,
			Job: &konstruct.ReplyJob{Message: konstruct.Message{TenantID: tenant, TeamID: p.TeamID, ChannelID: "C1", TS: p.TS}}})
		if err != nil || st.Stage != konstruct.StageQueued {
			t.Fatalf("begin: %+v %v", st, err)
		}
		if held, err := q.ClaimPlaceholder(ctx, p, "9.1"); err != nil || held != "9.1" {
			t.Fatalf("placeholder: %q %v", held, err)
		}
		lease, err := q.AcquireReply(ctx, p, nil)
		must(err)
		must(lease.Track(ctx))
		st, _, err = q.LoadReply(ctx, p)
		must(err)
		st.Stage, st.Text = konstruct.StageDone, "answer"
		must(q.SaveReply(ctx, st))
		lease.Release(ctx)
		if got, ok, err := q.LoadReply(ctx, p); err != nil || !ok || got.Text != "answer" || got.PlaceholderTS != "9.1" {
			t.Fatalf("load: %+v %v %v", got, ok, err)
		}
		if w, err := q.TakeSlack(ctx, p.TeamID, "C1", "chat.postMessage", konstruct.PriorityFinal); err != nil || w != 0 {
			t.Fatalf("slack budget: %v %v", w, err)
		}
		must(q.PauseSlack(ctx, p.TeamID, "chat.update", time.Second))
		release, err := q.AcquireLLM(ctx, "local", tenant, 4)
		must(err)
		release()
	}
	due, err := q.DueReplies(ctx, 100)
	must(err)
	for _, p := range due {
		if _, err := q.ClaimDue(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	must(q.Reschedule(ctx, posts[0], time.Now()))

	// The intake: recorded, read as a group, handed back, taken over, done.
	var msgs []konstruct.Message
	for i := range 5 {
		msgs = append(msgs, konstruct.Message{TeamID: "T1", ChannelID: "C1", TS: fmt.Sprintf("2.%d", i), User: "U1", Text: "hi"})
	}
	must(q.AppendIntake(ctx, msgs))
	recs, err := q.ReadIntake(ctx, "a", 10, 100*time.Millisecond, "")
	if err != nil || len(recs) != 5 {
		t.Fatalf("read intake: %d %v", len(recs), err)
	}
	must(q.HandBackIntake(ctx, "a", recs[0].ID))
	taken, err := q.ReclaimIntake(ctx, "b", time.Minute, 10)
	if err != nil || len(taken) != 1 {
		t.Fatalf("reclaim: %d %v", len(taken), err)
	}
	for _, r := range recs {
		must(q.DoneIntake(ctx, r.ID))
	}

	// Reply tasks: fair admission, then asynq, on the same cluster.
	var handled sync.Map
	var n atomic.Int32
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- q.Serve(sctx, 4, func(_ context.Context, job konstruct.ReplyJob, _ konstruct.Delivery) error {
			if _, dup := handled.LoadOrStore(job.Message.TS, true); !dup {
				n.Add(1)
			}
			q.ObserveReply(ctx, 10*time.Millisecond)
			return nil
		})
	}()
	const jobs = 24
	for i := range jobs {
		tenant := tenants[i%len(tenants)]
		must(q.Enqueue(ctx, konstruct.ReplyJob{Message: konstruct.Message{TenantID: tenant, TeamID: "T" + tenant, ChannelID: "C2", TS: fmt.Sprintf("3.%03d", i)}}))
	}
	if _, err := q.EstimateWait(ctx, tenants[0]); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); n.Load() < jobs; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d reply tasks ran", n.Load(), jobs)
		}
	}
	stop()
	must(<-served)

	// The gateways' leases.
	live, err := q.GatewayBeat(ctx, "g1", time.Minute)
	if err != nil || len(live) != 1 {
		t.Fatalf("gateway beat: %v %v", live, err)
	}
	held, err := q.HoldApps(ctx, "g1", 2, time.Minute, []konstruct.AppLease{{App: "app1", Acquire: true, Ready: true}, {App: "app2", Acquire: true}})
	if err != nil || len(held) != 2 || !held[0].Held || !held[1].Held {
		t.Fatalf("hold apps: %v %v", held, err)
	}
	if _, err := q.HoldApps(ctx, "g1", 2, time.Minute, []konstruct.AppLease{{App: "app1", Release: true}, {App: "app2", Release: true}}); err != nil {
		t.Fatal(err)
	}
	must(q.LeaveGateways(ctx, "g1"))

	// What an operator sees.
	if info, err := q.Info(ctx); err != nil || info.Completed != jobs {
		t.Fatalf("info: %+v %v", info, err)
	}
	if _, err := q.Backlog(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := q.InFlight(ctx); err != nil {
		t.Fatal(err)
	}
	if ts, err := q.Tasks(ctx, queue.StateCompleted, 5); err != nil || len(ts) != 5 {
		t.Fatalf("tasks: %d %v", len(ts), err)
	}
	if ps, err := q.ListPrefixes(ctx, regexp.MustCompile("^"+regexp.QuoteMeta(prefix))); err != nil || len(ps) != 1 {
		t.Fatalf("list prefixes: %v %v", ps, err)
	}

	// The keys spread over the masters; Purge finds them on each.
	count := func() (total, nodes int) {
		for _, a := range cl.Addrs {
			c := redis.NewClient(&redis.Options{Addr: a})
			ks, err := c.Keys(ctx, "*"+prefix+"*").Result()
			_ = c.Close()
			must(err)
			total += len(ks)
			if len(ks) > 0 {
				nodes++
			}
		}
		return total, nodes
	}
	if total, nodes := count(); nodes < 3 {
		t.Errorf("the install's %d keys are on %d of 3 masters: the hash tags do not spread them", total, nodes)
	}
	must(q.Purge(ctx))
	if total, _ := count(); total != 0 {
		t.Errorf("%d keys left after Purge", total)
	}
}

// TestSentinelFailoverLosesNothing: writers record intake entries and
// claim posts without pause while the Redis master behind Sentinel is
// killed (the sentinels promote a replica) and, once it is back as a
// replica, while an operator switches the master over (CLIENT PAUSE WRITE,
// then SENTINEL FAILOVER, as the README says). Every write a writer was
// told succeeded is there afterwards: each recorded entry is read from the
// intake, each claim still refuses another owner. Writes fail for a while
// during each failover; the writers try again, as the gateway and the
// router do.
func TestSentinelFailoverLosesNothing(t *testing.T) {
	t.Parallel()
	s := testenv.StartSentinel(t, testenv.SentinelOptions{})
	q, err := queue.Open(queue.Config{URL: "redis://localhost/0", SentinelMaster: testenv.SentinelMaster, SentinelAddrs: s.Addrs,
		Prefix: randomPrefix(), WaitReplicas: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// What doctor sees: two replicas online for wait_replicas 1.
	if d, err := q.Durability(ctx); err != nil || d.Replicas != 2 || d.WaitReplicas != 1 || len(d.Problems()) > 0 {
		t.Fatalf("durability behind Sentinel: %+v %v %v", d, d.Problems(), err)
	}
	if p := (queue.Durability{AOF: true, EvictionPolicy: "noeviction", Sentinel: true, Replicas: 1, WaitReplicas: 1}).Problems(); len(p) != 1 || !strings.Contains(p[0], "one replica more") {
		t.Errorf("one replica for wait_replicas 1: %v", p)
	}

	var (
		mu       sync.Mutex
		recorded = map[string]bool{} // ts → AppendIntake said yes
		claimed  []konstruct.Post    // Claim said yes
		seen     = map[string]bool{} // ts → read from the intake
		failures atomic.Int64
	)
	load, stopLoad := context.WithCancel(ctx)
	var writers sync.WaitGroup
	for w := range 8 {
		writers.Go(func() {
			for i := 0; load.Err() == nil; i++ {
				ts := fmt.Sprintf("%d.%06d", w+1, i)
				m := konstruct.Message{TenantID: "t1", TeamID: "T1", ChannelID: "C1", TS: ts, User: "U1", Text: "hi"}
				wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
				err := q.AppendIntake(wctx, []konstruct.Message{m})
				var dup bool
				if err == nil {
					dup, err = q.Claim(wctx, m.Post(), "", "w")
				}
				wcancel()
				if err != nil {
					failures.Add(1)
					time.Sleep(20 * time.Millisecond)
					continue
				}
				mu.Lock()
				recorded[ts] = true
				if !dup {
					claimed = append(claimed, m.Post())
				}
				mu.Unlock()
			}
		})
	}
	readDone := make(chan struct{})
	stopRead := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			select {
			case <-stopRead:
				return
			default:
			}
			recs, err := q.ReadIntake(ctx, "reader", 500, 100*time.Millisecond, "")
			if err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			mu.Lock()
			for _, r := range recs {
				seen[r.Message.TS] = true
			}
			mu.Unlock()
			ids := make([]string, 0, len(recs))
			for _, r := range recs {
				ids = append(ids, r.ID)
			}
			_ = q.DoneIntake(ctx, ids...)
		}
	}()
	progress := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(recorded)
	}
	under := func(d time.Duration) {
		before := progress()
		time.Sleep(d)
		if progress() == before {
			t.Fatalf("no write succeeded in %v", d)
		}
	}
	// resumed waits for writes to succeed again and says how long since.
	resumed := func(since time.Time) time.Duration {
		before := progress()
		waitLong(t, 30*time.Second, "writes to succeed again", func() bool { return progress() > before+10 })
		return time.Since(since).Round(10 * time.Millisecond)
	}

	under(3 * time.Second)
	old := s.MasterAddr()
	killed := s.KillMaster()
	start := time.Now()
	now := s.WaitFailover(old, 60*time.Second)
	promoted := time.Since(start).Round(10 * time.Millisecond)
	t.Logf("crash: master %s killed; %s promoted after %v, writes again after %v; %d writes refused meanwhile",
		old, now, promoted, resumed(start), failures.Load())
	under(3 * time.Second)

	// The old master comes back, as a replica of the new one.
	killed.Start()
	waitLong(t, 60*time.Second, "the old master back as a replica", func() bool { return len(s.Replicas()) == 2 })
	under(3 * time.Second)

	// A planned switchover: writes paused on the master, so the replicas
	// have everything it took, then the failover.
	master := redis.NewClient(&redis.Options{Addr: now})
	if err := master.Do(ctx, "CLIENT", "PAUSE", 10000, "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	_ = master.Close()
	before := failures.Load()
	start = time.Now()
	s.Failover()
	next := s.WaitFailover(now, 60*time.Second)
	promoted = time.Since(start).Round(10 * time.Millisecond)
	// The clients still waiting on the old master go (their paused writes
	// never run there) and try again on the new one.
	oldMaster := redis.NewClient(&redis.Options{Addr: now})
	if err := oldMaster.Do(ctx, "CLIENT", "KILL", "TYPE", "normal").Err(); err != nil {
		t.Fatal(err)
	}
	_ = oldMaster.Close()
	t.Logf("switchover: %s → %s after %v, writes again after %v; %d writes refused meanwhile",
		now, next, promoted, resumed(start), failures.Load()-before)
	under(3 * time.Second)

	stopLoad()
	writers.Wait()
	waitLong(t, 30*time.Second, "every recorded entry read", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for ts := range recorded {
			if !seen[ts] {
				return false
			}
		}
		return true
	})
	close(stopRead)
	<-readDone

	mu.Lock()
	defer mu.Unlock()
	lostClaims := 0
	for _, p := range claimed {
		dup, err := q.Claim(ctx, p, "", "someone else")
		if err != nil {
			t.Fatal(err)
		}
		if !dup {
			lostClaims++
		}
	}
	if lostClaims > 0 {
		t.Errorf("%d of %d claims lost in the failovers", lostClaims, len(claimed))
	}
	t.Logf("%d entries recorded and read, %d claims kept, %d writes refused and tried again", len(recorded), len(claimed), failures.Load())
}

// TestWaitReplicasRefusesAnUnconfirmedWrite: with redis.wait_replicas and
// no replica to confirm, a write fails (ErrNotReplicated, EUNAVAILABLE to
// its caller, who tries again) and a read does not.
func TestWaitReplicasRefusesAnUnconfirmedWrite(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedisServer(t)
	q, err := queue.Open(queue.Config{URL: srv.URL, Prefix: randomPrefix(), WaitReplicas: 1, WaitTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	ctx := ctxT(t)
	p := konstruct.Post{TenantID: "t", TeamID: "T", ChannelID: "C", TS: "1.1"}
	_, err = q.Claim(ctx, p, "", "o")
	if !errors.Is(err, queue.ErrNotReplicated) || konstruct.ErrorCode(err) != konstruct.EUNAVAILABLE {
		t.Fatalf("claim without a replica: %v, want ErrNotReplicated as EUNAVAILABLE", err)
	}
	if err := q.AppendIntake(ctx, []konstruct.Message{{TeamID: "T", ChannelID: "C", TS: "1.1"}}); !errors.Is(err, queue.ErrNotReplicated) {
		t.Fatalf("append without a replica: %v", err)
	}
	if _, _, err := q.LoadReply(ctx, p); err != nil {
		t.Fatalf("a read: %v", err)
	}
	if err := q.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

func waitLong(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
