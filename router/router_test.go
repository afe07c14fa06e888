package router_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/router"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeSlack records the router's Slack writes.
type fakeSlack struct {
	mu         sync.Mutex
	posts      []string // channel/thread: text
	updates    []string // ts: text
	ephemerals []string // user@thread: text
	deletes    []string
	postErr    error
	n          int
	thread     []konstruct.ThreadMessage // what Replies returns
	reads      int
}

func (f *fakeSlack) Post(_ context.Context, _, channel, thread string, c konstruct.Content) (string, error) {
	text := c.Text
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.postErr != nil {
		return "", f.postErr
	}
	f.n++
	f.posts = append(f.posts, channel+"/"+thread+": "+text)
	return fmt.Sprintf("9%d.000000", f.n), nil
}

func (f *fakeSlack) Replies(context.Context, string, string, string) ([]konstruct.ThreadMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return f.thread, nil
}

func (f *fakeSlack) PostEphemeral(_ context.Context, _, _, user, thread, text string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ephemerals = append(f.ephemerals, user+"@"+thread+": "+text)
	return nil
}

func (f *fakeSlack) Delete(_ context.Context, _, _, ts string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes = append(f.deletes, ts)
	return nil
}

func (f *fakeSlack) writes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.posts) + len(f.ephemerals) + len(f.deletes)
}

// fakeEnqueuer records jobs; fail makes the next calls fail.
type fakeEnqueuer struct {
	mu   sync.Mutex
	jobs []konstruct.ReplyJob
	seen map[string]bool
	fail int // how many calls fail (-1: all)
}

func (f *fakeEnqueuer) Enqueue(_ context.Context, job konstruct.ReplyJob) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != 0 {
		if f.fail > 0 {
			f.fail--
		}
		return errors.New("dial tcp: connection refused")
	}
	id := job.Message.Post().String()
	if f.seen[id] {
		return konstruct.Errorf(konstruct.ECONFLICT, "duplicate")
	}
	if f.seen == nil {
		f.seen = map[string]bool{}
	}
	f.seen[id] = true
	f.jobs = append(f.jobs, job)
	return nil
}

func (f *fakeEnqueuer) EstimateWait(context.Context, string) (time.Duration, error) { return 0, nil }

func (f *fakeEnqueuer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.jobs)
}

// fakeTenants is a team → workspace table.
type fakeTenants struct {
	mu    sync.Mutex
	teams map[string]konstruct.Workspace
	calls int
}

func (f *fakeTenants) TenantForTeam(_ context.Context, team string) (konstruct.Workspace, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	w, ok := f.teams[team]
	if !ok {
		return konstruct.Workspace{}, konstruct.Errorf(konstruct.ENOTFOUND, "no team %s", team)
	}
	return w, nil
}

const (
	team    = "T1"
	tenant  = "tenant-1"
	botUser = "UBOT"
	human   = "UHUMAN"
)

type unit struct {
	r       *router.Router
	slack   *fakeSlack
	enq     *fakeEnqueuer
	tenants *fakeTenants
	q       *queue.Queue
	redis   *testenv.Redis
	pols    *fakePolicies
	recs    *fakeRecords
}

// newUnit is a router with fake Slack, enqueuer and tenants, and a real
// queue (claims, engaged threads, rate limit) on the test's Redis prefix.
func newUnit(t *testing.T, cfg router.Config, perMinute int) *unit {
	t.Helper()
	rd := testenv.NewRedis(t)
	u := &unit{
		slack:   &fakeSlack{},
		enq:     &fakeEnqueuer{},
		tenants: &fakeTenants{teams: map[string]konstruct.Workspace{team: {TenantID: tenant, TeamID: team, BotUserID: botUser, Status: konstruct.WorkspaceActive}}},
		q:       rd.NewQueue(t, queue.Config{RatePerMinute: cmp.Or(perMinute, 1000), EngagedTTL: time.Minute}),
		redis:   rd,
	}
	u.pols, u.recs = &fakePolicies{}, &fakeRecords{}
	u.r = router.New(cfg, withPolicies(router.Deps{Intake: u.q, Tenants: u.tenants, Slack: u.slack, Claims: u.q, Threads: u.q, Limiter: u.q, Replies: u.q, Enqueuer: u.enq, Budgets: u.q},
		u.q, u.pols, u.recs))
	return u
}

var recSeq atomic.Int64

// route routes m as a fresh record of its own.
func (u *unit) route(ctx context.Context, m konstruct.Message) (router.Outcome, error) {
	return u.r.Route(ctx, konstruct.Record{ID: fmt.Sprintf("%d-0", recSeq.Add(1)), Message: m})
}

var tsSeq struct {
	sync.Mutex
	n int
}

func nextTS() string {
	tsSeq.Lock()
	defer tsSeq.Unlock()
	tsSeq.n++
	return fmt.Sprintf("17000%05d.000100", tsSeq.n)
}

func msg(mod func(*konstruct.Message)) konstruct.Message {
	ts := nextTS()
	m := konstruct.Message{TeamID: team, EventID: "Ev" + ts, EventType: "message", ChannelID: "C1",
		ChannelType: konstruct.ChannelPublic, User: human, Text: "hi", TS: ts, ReceivedAt: time.Now()}
	if mod != nil {
		mod(&m)
	}
	return m
}

func mention(m *konstruct.Message) { m.EventType, m.IsMention, m.ChannelType = "app_mention", true, "" }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRouteDecisions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		msg    konstruct.Message
		engage bool
		want   router.Outcome
	}{
		{"mention", msg(mention), false, router.Enqueued},
		{"DM without mention", msg(func(m *konstruct.Message) { m.ChannelType, m.IsDM, m.ChannelID = konstruct.ChannelIM, true, "D1" }), false, router.Enqueued},
		{"top-level without mention", msg(nil), false, router.NotAddressed},
		{"unengaged thread", msg(func(m *konstruct.Message) { m.ThreadTS = "1.0" }), false, router.NotAddressed},
		{"engaged thread", msg(func(m *konstruct.Message) { m.ThreadTS = "1.0" }), true, router.Enqueued},
		{"group DM without mention", msg(func(m *konstruct.Message) { m.ChannelType = konstruct.ChannelMPIM }), false, router.NotAddressed},
		{"other bot", msg(func(m *konstruct.Message) { mention(m); m.BotID = "B2" }), false, router.Bot},
		{"bot_message", msg(func(m *konstruct.Message) { m.SubType, m.User = "bot_message", "" }), false, router.Bot},
		{"own user", msg(func(m *konstruct.Message) { m.IsDM, m.User = true, botUser }), false, router.Bot},
		{"edit", msg(func(m *konstruct.Message) { m.IsDM, m.SubType = true, "message_changed" }), false, router.Edit},
		{"delete", msg(func(m *konstruct.Message) { m.IsDM, m.SubType, m.User = true, "message_deleted", "" }), false, router.Delete},
		{"join", msg(func(m *konstruct.Message) { m.SubType = "channel_join" }), false, router.Join},
		{"topic", msg(func(m *konstruct.Message) { m.SubType = "channel_topic" }), false, router.IgnoredSubtype},
		{"thread broadcast in engaged thread", msg(func(m *konstruct.Message) { m.SubType, m.ThreadTS = "thread_broadcast", "2.0" }), true, router.Enqueued},
		{"unknown workspace", msg(func(m *konstruct.Message) { mention(m); m.TeamID = "T-unknown" }), false, router.UnknownWorkspace},
		{"no user", msg(func(m *konstruct.Message) { mention(m); m.User = "" }), false, router.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newUnit(t, router.Config{}, 0)
			ctx := ctxT(t)
			if tt.engage {
				if err := u.q.Engage(ctx, tenant, tt.msg.ChannelID, tt.msg.ThreadTS); err != nil {
					t.Fatal(err)
				}
			}
			got, err := u.route(ctx, tt.msg)
			if err != nil || got != tt.want {
				t.Fatalf("Route = %q, %v; want %q", got, err, tt.want)
			}
			wantJobs, wantWrites := 0, 0
			if tt.want == router.Enqueued {
				wantJobs, wantWrites = 1, 1
			}
			if u.enq.count() != wantJobs || u.slack.writes() != wantWrites {
				t.Fatalf("%d jobs, %d Slack writes; want %d, %d", u.enq.count(), u.slack.writes(), wantJobs, wantWrites)
			}
			if wantJobs == 1 {
				job := u.enq.jobs[0]
				if job.Message.TenantID != tenant || job.PlaceholderTS == "" || job.EnqueuedAt.IsZero() {
					t.Errorf("job %+v", job)
				}
				if want := "C1/" + tt.msg.ReplyThreadTS() + ": Thinking..."; tt.msg.ChannelID == "C1" && u.slack.posts[0] != want {
					t.Errorf("placeholder %q, want %q", u.slack.posts[0], want)
				}
			}
		})
	}
}

func TestRouteDedupe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		engage bool
		order  []string // which twin arrives when: "mention", "message", "retry"
		want   []router.Outcome
	}{
		{"retry of the mention", false, []string{"mention", "retry"}, []router.Outcome{router.Enqueued, router.Duplicate}},
		{"twin not for us first does not block the mention", false, []string{"message", "mention"}, []router.Outcome{router.NotAddressed, router.Enqueued}},
		{"mention first", false, []string{"mention", "message"}, []router.Outcome{router.Enqueued, router.NotAddressed}},
		{"engaged thread: both addressed, one task", true, []string{"message", "mention", "retry"}, []router.Outcome{router.Enqueued, router.Duplicate, router.Duplicate}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newUnit(t, router.Config{}, 0)
			ctx := ctxT(t)
			base := msg(nil)
			if tt.engage {
				base.ThreadTS = "1.0"
				_ = u.q.Engage(ctx, tenant, base.ChannelID, base.ThreadTS)
			}
			twin := map[string]konstruct.Message{}
			m := base
			mention(&m)
			m.EventID = base.EventID + "-mention"
			twin["mention"] = m
			twin["message"] = base
			r := m
			r.RetryAttempt = 1
			twin["retry"] = r
			for i, which := range tt.order {
				got, err := u.route(ctx, twin[which])
				if err != nil || got != tt.want[i] {
					t.Fatalf("%s: Route = %q, %v; want %q", which, got, err, tt.want[i])
				}
			}
			if u.enq.count() != 1 || len(u.slack.posts) != 1 {
				t.Fatalf("%d jobs, %d placeholders; want 1, 1", u.enq.count(), len(u.slack.posts))
			}
		})
	}
}

func TestRouteRateLimit(t *testing.T) {
	t.Parallel()
	u := newUnit(t, router.Config{}, 2)
	ctx := ctxT(t)
	for i, want := range []router.Outcome{router.Enqueued, router.Enqueued, router.RateLimited} {
		got, err := u.route(ctx, msg(mention))
		if err != nil || got != want {
			t.Fatalf("#%d: %q, %v; want %q", i, got, err, want)
		}
	}
	// Another channel has its own budget; refused again in the same
	// window, a person is not told twice; another person refused is told,
	// in the thread when the message is in one.
	if got, _ := u.route(ctx, msg(func(m *konstruct.Message) { mention(m); m.ChannelID = "C2" })); got != router.Enqueued {
		t.Fatalf("other channel: %q", got)
	}
	if got, _ := u.route(ctx, msg(mention)); got != router.RateLimited {
		t.Fatalf("again: %q", got)
	}
	reply := msg(func(m *konstruct.Message) { mention(m); m.ThreadTS = "5.0"; m.User = "UOTHER" })
	if got, _ := u.route(ctx, reply); got != router.RateLimited {
		t.Fatalf("thread reply: %q", got)
	}
	if u.enq.count() != 3 || len(u.slack.ephemerals) != 2 {
		t.Fatalf("%d jobs, ephemerals %q", u.enq.count(), u.slack.ephemerals)
	}
	if e := u.slack.ephemerals[0]; !strings.HasPrefix(e, human+"@: I'm receiving too many requests right now — please try again in ") || !strings.HasSuffix(e, " seconds.") {
		t.Errorf("ephemeral %q", e)
	}
	if e := u.slack.ephemerals[1]; !strings.HasPrefix(e, "UOTHER@5.0: ") {
		t.Errorf("thread ephemeral %q", e)
	}
	// Keys live under the prefix, namespaced by tenant; none is left outside.
	if n, _ := u.redis.Client.Exists(ctx, u.redis.Prefix+"{"+tenant+"}:ratelimit:C1").Result(); n != 1 {
		t.Error("rate limit key not under <prefix>{<tenant>}:ratelimit:")
	}
	if keys, _ := u.redis.Client.Keys(ctx, "rate:"+u.redis.Prefix+"*").Result(); len(keys) > 0 {
		t.Errorf("keys outside the prefix: %v", keys)
	}
}

// One person cannot exhaust a channel for everyone.
func TestRouteRateLimitPerPerson(t *testing.T) {
	t.Parallel()
	rd := testenv.NewRedis(t)
	q := rd.NewQueue(t, queue.Config{RatePerMinute: 1000, RatePerUserPerMinute: 2})
	u := &unit{slack: &fakeSlack{}, enq: &fakeEnqueuer{}, q: q, redis: rd,
		tenants: &fakeTenants{teams: map[string]konstruct.Workspace{team: {TenantID: tenant, TeamID: team, BotUserID: botUser, Status: konstruct.WorkspaceActive}}}}
	u.r = router.New(router.Config{}, withPolicies(router.Deps{Intake: q, Tenants: u.tenants, Slack: u.slack, Claims: q, Threads: q, Limiter: q, Replies: q, Enqueuer: u.enq, Budgets: q}, q, nil, nil))
	ctx := ctxT(t)
	for i, want := range []router.Outcome{router.Enqueued, router.Enqueued, router.RateLimited, router.RateLimited} {
		if got, err := u.route(ctx, msg(mention)); err != nil || got != want {
			t.Fatalf("#%d: %q, %v; want %q", i, got, err, want)
		}
	}
	for i := range 2 {
		if got, _ := u.route(ctx, msg(func(m *konstruct.Message) { mention(m); m.User = "UCOLLEAGUE" })); got != router.Enqueued {
			t.Fatalf("a colleague's question #%d: %q", i, got)
		}
	}
	if len(u.slack.ephemerals) != 1 {
		t.Errorf("ephemerals %q: want one, to the person over their limit", u.slack.ephemerals)
	}
}

func TestRateLimitText(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		0:                       "1 second.",
		1500 * time.Millisecond: "2 seconds.",
		30 * time.Second:        "30 seconds.",
	} {
		if got := router.RateLimitText(d); !strings.HasSuffix(got, "please try again in "+want) {
			t.Errorf("RateLimitText(%v) = %q", d, got)
		}
	}
}

// Routing a record again (a transient error, a crash, another process
// taking it over) is idempotent: one claim, one reply state, one
// placeholder, one task.
func TestRouteAgainIsIdempotent(t *testing.T) {
	t.Parallel()
	t.Run("enqueue fails, then works: one placeholder", func(t *testing.T) {
		t.Parallel()
		u := newUnit(t, router.Config{}, 0)
		u.enq.fail = 2
		rec := konstruct.Record{ID: "1-0", Message: msg(mention)}
		for i := range 2 {
			if out, err := u.r.Route(ctxT(t), rec); err == nil {
				t.Fatalf("attempt %d: %q without error while Redis refuses the enqueue", i+1, out)
			}
			rec.Redelivered = true
		}
		if out, err := u.r.Route(ctxT(t), rec); out != router.Enqueued || err != nil {
			t.Fatalf("Route = %q, %v", out, err)
		}
		if len(u.slack.posts) != 1 || len(u.slack.deletes) != 0 || u.enq.count() != 1 {
			t.Errorf("posts %q deletes %q, %d jobs", u.slack.posts, u.slack.deletes, u.enq.count())
		}
		st, _, _ := u.q.LoadReply(ctxT(t), konstruct.Post{TenantID: tenant, TeamID: team, ChannelID: rec.Message.ChannelID, TS: rec.Message.TS})
		if st.PlaceholderTS == "" || st.PlaceholderTS != u.enq.jobs[0].PlaceholderTS || st.Job == nil {
			t.Errorf("reply state %+v, job placeholder %q", st, u.enq.jobs[0].PlaceholderTS)
		}
	})
	t.Run("crash between posting and recording: the placeholder is found, not posted again", func(t *testing.T) {
		t.Parallel()
		u := newUnit(t, router.Config{}, 0)
		m := msg(mention)
		// The earlier run posted this and died before recording it.
		u.slack.thread = []konstruct.ThreadMessage{
			{TS: m.TS, User: human, Text: "hi"},
			{TS: "99999999999.000001", User: botUser, BotID: "B1", Text: konstruct.TextThinking},
		}
		if out, err := u.r.Route(ctxT(t), konstruct.Record{ID: "7-0", Message: m, Redelivered: true}); out != router.Enqueued || err != nil {
			t.Fatalf("Route = %q, %v", out, err)
		}
		if len(u.slack.posts) != 0 || u.enq.jobs[0].PlaceholderTS != "99999999999.000001" {
			t.Errorf("posts %q, job placeholder %q", u.slack.posts, u.enq.jobs[0].PlaceholderTS)
		}
	})
	t.Run("no placeholder: still enqueued", func(t *testing.T) {
		t.Parallel()
		u := newUnit(t, router.Config{}, 0)
		u.slack.postErr = errors.New("slack down")
		if got, err := u.route(ctxT(t), msg(mention)); got != router.Enqueued || err != nil {
			t.Fatalf("Route = %q, %v", got, err)
		}
		if job := u.enq.jobs[0]; job.PlaceholderTS != "" {
			t.Errorf("placeholder %q", job.PlaceholderTS)
		}
	})
	t.Run("claims lost, task kept: no second placeholder", func(t *testing.T) {
		t.Parallel()
		u := newUnit(t, router.Config{}, 0)
		m := msg(mention)
		m2 := m
		m2.EventID += "-other-daemon"
		if got, _ := u.route(ctxT(t), m); got != router.Enqueued {
			t.Fatal(got)
		}
		// The dedupe claim of the post is gone (Redis lost it); the reply
		// state and the task id still hold.
		u.redis.Client.Del(ctxT(t), u.redis.Prefix+"{"+tenant+"}:post:"+team+":"+m.ChannelID+":"+m.TS)
		if got, _ := u.route(ctxT(t), m2); got != router.Duplicate {
			t.Fatalf("Route = %q", got)
		}
		if len(u.slack.posts) != 1 || len(u.slack.deletes) != 0 || u.enq.count() != 1 {
			t.Errorf("posts %q, deletes %q, %d jobs", u.slack.posts, u.slack.deletes, u.enq.count())
		}
	})
	t.Run("Redis down: an error, never a silent drop", func(t *testing.T) {
		t.Parallel()
		u := newUnit(t, router.Config{}, 0)
		down, err := queue.Open(queue.Config{URL: "redis://" + closedAddr(t) + "/0", Prefix: u.redis.Prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = down.Close() })
		r := router.New(router.Config{}, withPolicies(router.Deps{Intake: down, Tenants: u.tenants, Slack: u.slack, Claims: down, Threads: down, Limiter: down, Replies: down, Enqueuer: u.enq, Budgets: down}, down, nil, nil))
		for _, m := range []konstruct.Message{msg(mention), msg(func(m *konstruct.Message) { m.ThreadTS = "1.0" })} {
			ctx, cancel := context.WithTimeout(ctxT(t), 3*time.Second)
			out, err := r.Route(ctx, konstruct.Record{ID: "1-0", Message: m})
			cancel()
			if err == nil {
				t.Errorf("Route(%+v) = %q without error while Redis is down", m, out)
			}
		}
		if u.slack.writes() != 0 || u.enq.count() != 0 {
			t.Errorf("%d Slack writes, %d jobs", u.slack.writes(), u.enq.count())
		}
	})
}

func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestTenantCache(t *testing.T) {
	t.Parallel()
	var clock atomic.Int64 // nanoseconds past the start
	start := time.Now()
	u := newUnit(t, router.Config{TenantTTL: 300 * time.Millisecond, Now: func() time.Time { return start.Add(time.Duration(clock.Load())) }}, 0)
	ctx := ctxT(t)
	dm := func() konstruct.Message {
		return msg(func(m *konstruct.Message) { m.IsDM, m.ChannelType, m.ChannelID = true, konstruct.ChannelIM, "D1" })
	}
	for range 3 {
		_, _ = u.route(ctx, dm())
	}
	if u.tenants.calls != 1 {
		t.Errorf("%d lookups for 3 messages, want 1 (cached)", u.tenants.calls)
	}
	u.tenants.mu.Lock()
	delete(u.tenants.teams, team)
	u.tenants.mu.Unlock()
	u.r.InvalidateTenants()
	if got, _ := u.route(ctx, dm()); got != router.UnknownWorkspace {
		t.Errorf("after remove + invalidate: %q", got)
	}
	// Without invalidation, the TTL bounds how long a change goes unseen.
	u.tenants.mu.Lock()
	u.tenants.teams[team] = konstruct.Workspace{TenantID: tenant, TeamID: team, BotUserID: botUser}
	u.tenants.mu.Unlock()
	if got, _ := u.route(ctx, dm()); got != router.UnknownWorkspace {
		t.Errorf("re-added, within the TTL: %q, want the cached answer", got)
	}
	clock.Add(int64(350 * time.Millisecond))
	if got, _ := u.route(ctx, dm()); got != router.Enqueued {
		t.Errorf("after re-add and TTL: %q", got)
	}
	u.tenants.mu.Lock()
	u.tenants.teams[team] = konstruct.Workspace{TenantID: tenant, TeamID: team, Status: konstruct.WorkspaceRevoked}
	u.tenants.mu.Unlock()
	u.r.InvalidateTenants()
	if got, _ := u.route(ctx, dm()); got != router.UnknownWorkspace {
		t.Errorf("revoked workspace: %q", got)
	}
}

func BenchmarkRoute(b *testing.B) {
	rd := testenv.NewRedis(b)
	q := rd.NewQueue(b, queue.Config{RatePerMinute: 1 << 30})
	tenants := &fakeTenants{teams: map[string]konstruct.Workspace{team: {TenantID: tenant, TeamID: team, BotUserID: botUser}}}
	r := router.New(router.Config{}, withPolicies(router.Deps{Intake: q,
		Tenants: tenants, Slack: &fakeSlack{}, Enqueuer: &fakeEnqueuer{}, Claims: q, Threads: q, Limiter: q, Replies: q, Budgets: q}, q, nil, nil))
	ctx := context.Background()
	b.Run("mention", func(b *testing.B) {
		for b.Loop() {
			if out, err := r.Route(ctx, konstruct.Record{ID: "1-0", Message: msg(mention)}); out != router.Enqueued {
				b.Fatal(out, err)
			}
		}
	})
	b.Run("not_addressed", func(b *testing.B) {
		for b.Loop() {
			if out, _ := r.Route(ctx, konstruct.Record{ID: "1-0", Message: msg(nil)}); out != router.NotAddressed {
				b.Fatal(out)
			}
		}
	})
}
