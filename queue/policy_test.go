package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/queue"
)

const tenantB = "00000000-0000-4000-8000-00000000000b"

// TestTokensPerUTCDayAndMonth: a tenant's counters are per UTC day and
// calendar month, apart from other tenants'; corrections may be negative.
func TestTokensPerUTCDayAndMonth(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := testenv.NewRedis(t).NewQueue(t, queue.Config{})
	// 23:59:59 UTC is still the day; one second later is the next; the
	// last second of January is January.
	lastSecond := time.Date(2026, 1, 31, 23, 59, 59, 0, time.UTC)
	for _, step := range []struct {
		tenant     string
		at         time.Time
		n          int64
		day, month int64
	}{
		{tenantA, lastSecond.Add(-time.Hour), 100, 100, 100},
		{tenantA, lastSecond.In(time.FixedZone("CET", 3600)), 50, 150, 150}, // 00:59 on Feb 1 in CET: Jan 31 in UTC
		{tenantA, lastSecond.Add(time.Second), 7, 7, 7},                     // Feb 1: a new day and month
		{tenantA, lastSecond.Add(time.Second), -2, 5, 5},                    // an estimate corrected down
		{tenantB, lastSecond, 1, 1, 1},
	} {
		day, month, err := q.AddTokens(ctx, step.tenant, step.at, step.n)
		if err != nil || day != step.day || month != step.month {
			t.Fatalf("AddTokens(%s, %v, %d) = %d, %d, %v; want %d, %d", step.tenant, step.at, step.n, day, month, err, step.day, step.month)
		}
	}
	if day, month, err := q.TokensUsed(ctx, tenantA, lastSecond); err != nil || day != 150 || month != 150 {
		t.Fatalf("TokensUsed(Jan 31) = %d, %d, %v", day, month, err)
	}
	if day, month, err := q.TokensUsed(ctx, tenantA, lastSecond.Add(48*time.Hour)); err != nil || day != 0 || month != 5 {
		t.Fatalf("TokensUsed(Feb 2) = %d, %d, %v; want a fresh day in February", day, month, err)
	}
}

// TestNoteOncePerPersonPerUTCDay: the first note of a kind to a person in
// a UTC day may go; the others not, until the next day; a note not sent
// is given back.
func TestNoteOncePerPersonPerUTCDay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := testenv.NewRedis(t).NewQueue(t, queue.Config{})
	day := time.Date(2026, 3, 10, 8, 0, 0, 0, time.UTC)
	for _, step := range []struct {
		kind, user string
		at         time.Time
		want       bool
	}{
		{"dm", "U1", day, true},
		{"dm", "U1", day.Add(15 * time.Hour), false},   // later that day
		{"budget", "U1", day, true},                    // another kind
		{"dm", "U2", day, true},                        // another person
		{"dm", "U1", day.Add(16 * time.Hour), true},    // 00:00 UTC the next day
		{"dm", "U1", day.Add(16*time.Hour + 1), false}, // and only once then
	} {
		ok, err := q.NoteOnce(ctx, tenantA, step.kind, "T1", step.user, step.at)
		if err != nil || ok != step.want {
			t.Fatalf("NoteOnce(%s, %s, %v) = %v, %v; want %v", step.kind, step.user, step.at, ok, err, step.want)
		}
	}
	if err := q.ForgetNote(ctx, tenantA, "dm", "T1", "U2", day); err != nil {
		t.Fatal(err)
	}
	if ok, err := q.NoteOnce(ctx, tenantA, "dm", "T1", "U2", day); err != nil || !ok {
		t.Fatalf("after ForgetNote: %v, %v", ok, err)
	}
	if ok, _ := q.NoteOnce(ctx, tenantB, "dm", "T1", "U1", day); !ok {
		t.Fatal("another tenant's note is not its own")
	}
}

// TestStopReachesAnyProcess: a Stop written through one queue is seen
// through another (two processes), for that post only.
func TestStopReachesAnyProcess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := testenv.NewRedis(t)
	gateway, worker := rd.NewQueue(t, queue.Config{}), rd.NewQueue(t, queue.Config{})
	post := konstruct.Post{TenantID: tenantA, TeamID: "T1", ChannelID: "C1", TS: "1.1"}
	if ok, err := worker.ReplyStopped(ctx, post); err != nil || ok {
		t.Fatalf("before Stop: %v, %v", ok, err)
	}
	if err := gateway.StopReply(ctx, post); err != nil {
		t.Fatal(err)
	}
	if ok, err := worker.ReplyStopped(ctx, post); err != nil || !ok {
		t.Fatalf("after Stop: %v, %v", ok, err)
	}
	other := post
	other.TenantID = tenantB
	if ok, _ := worker.ReplyStopped(ctx, other); ok {
		t.Fatal("another tenant's post with the same names is stopped too")
	}
	if ttl := pttl(t, rd, "*"+tenantA+"*:stop:T1:C1:1.1"); ttl <= 0 || ttl > queue.StopTTL {
		t.Fatalf("stop key TTL %v", ttl)
	}
}

// TestEngageForTTL: the follow window is the tenant's TTL, or
// threads.engaged_ttl when it has none.
func TestEngageForTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := testenv.NewRedis(t)
	q := rd.NewQueue(t, queue.Config{EngagedTTL: 30 * time.Minute})
	if err := q.EngageFor(ctx, tenantA, "C1", "1.1", 0); err != nil {
		t.Fatal(err)
	}
	if err := q.EngageFor(ctx, tenantA, "C1", "2.2", 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	for ts, want := range map[string]time.Duration{"1.1": 30 * time.Minute, "2.2": 2 * time.Hour} {
		if ok, err := q.Engaged(ctx, tenantA, "C1", ts); err != nil || !ok {
			t.Fatalf("thread %s not engaged: %v", ts, err)
		}
		if ttl := pttl(t, rd, "*"+tenantA+"*:engaged:C1:"+ts); ttl <= want-time.Minute || ttl > want {
			t.Errorf("thread %s: TTL %v, want about %v", ts, ttl, want)
		}
	}
}

// pttl is the TTL of the one key of the test's prefix matching pattern.
func pttl(t *testing.T, rd *testenv.Redis, pattern string) time.Duration {
	t.Helper()
	ctx := context.Background()
	ks, err := rd.Client.Keys(ctx, rd.Prefix+pattern).Result()
	if err != nil || len(ks) != 1 {
		t.Fatalf("keys %s%s: %v, %v", rd.Prefix, pattern, ks, err)
	}
	return rd.Client.PTTL(ctx, ks[0]).Val()
}
