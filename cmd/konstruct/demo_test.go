package main

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/store"
)

// TestDemoRemovesWhatKilledDemosLeft: a demo killed before its cleanup
// (SIGKILL) leaves its database, roles and Redis keys; the next demo removes
// them and says so, and leaves alone those of a demo still running. Not
// parallel: TestDemoHeadless's demo would reap the same leftovers.
func TestDemoRemovesWhatKilledDemosLeft(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rd := testenv.NewRedis(t)
	admin := testenv.PGAdminURL()
	provision := func(name string) {
		t.Helper()
		db, err := store.Provision(ctx, admin, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Drop(context.Background()) })
	}
	// Killed: a database with its roles and a key; and one whose database
	// went but whose queue is still in Redis.
	provision("konstruct_demo_deadbee1")
	rd.Client.Set(ctx, "demo:deadbee1:x", "1", time.Hour)
	q, err := queue.Open(queue.Config{URL: rd.URL, Prefix: "demo:deadbee2:"})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.Enqueue(ctx, konstruct.ReplyJob{Message: konstruct.Message{TenantID: "00000000-0000-4000-8000-000000000001", TeamID: "T", ChannelID: "C", TS: "1.1", EventID: "Ev1"}}); err != nil {
		t.Fatal(err)
	}
	// Running: held by its process.
	provision("konstruct_demo_cafebab3")
	release, err := store.HoldScratch(ctx, admin, "konstruct_demo_cafebab3")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	rd.Client.Set(ctx, "demo:cafebab3:x", "1", time.Hour)
	t.Cleanup(func() { rd.Client.Del(context.Background(), "demo:cafebab3:x") })

	r := cliIn(t, map[string]string{}, strings.NewReader("/quit\n"),
		"demo", "--llm=echo", "--admin-url", admin, "--redis-url", rd.URL, "--answer-timeout", "5s")
	t.Logf("demo output:\n%s", r.stdout)
	if r.err != nil {
		t.Fatalf("demo: %s\nstderr: %s", r.line(), r.stderr)
	}
	// (Other leftovers on this machine may be named too.)
	if !regexp.MustCompile(`(?m)^▸ removed what \d+ earlier demo\(s\) left behind \(database, roles, Redis keys\): .*konstruct_demo_deadbee1, konstruct_demo_deadbee2`).MatchString(r.stdout) {
		t.Error("the demo does not say what it removed")
	}
	if strings.Contains(r.stdout, "cafebab3") {
		t.Error("the demo touched a running demo's leftovers")
	}
	if n := adminCount(t, admin, `SELECT count(*) FROM pg_database WHERE datname LIKE 'konstruct_demo_deadbee%'`); n != 0 {
		t.Errorf("%d killed demo databases left", n)
	}
	if n := adminCount(t, admin, `SELECT count(*) FROM pg_roles WHERE rolname LIKE 'konstruct_demo_deadbee%'`); n != 0 {
		t.Errorf("%d killed demo roles left", n)
	}
	if n := adminCount(t, admin, `SELECT count(*) FROM pg_database WHERE datname = 'konstruct_demo_cafebab3'`); n != 1 {
		t.Error("the running demo's database was dropped")
	}
	if keys, _ := rd.Client.Keys(ctx, "*demo:deadbee*").Result(); len(keys) != 0 {
		t.Errorf("killed demo keys left: %v", keys)
	}
	if qs, _ := rd.Client.SMembers(ctx, "asynq:queues").Result(); slices.Contains(qs, "demo:deadbee2:replies") {
		t.Error("the killed demo's queue is still registered")
	}
	if n, _ := rd.Client.Exists(ctx, "demo:cafebab3:x").Result(); n != 1 {
		t.Error("the running demo's key was deleted")
	}
}
