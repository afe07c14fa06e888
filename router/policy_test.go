package router_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/router"
)

// fakePolicies is a tenant → policy table (the default policy for others).
type fakePolicies struct {
	mu sync.Mutex
	m  map[string]konstruct.Policy
}

func (f *fakePolicies) Policy(_ context.Context, tenantID string) (konstruct.Policy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.m[tenantID]; ok {
		return p, nil
	}
	return konstruct.DefaultPolicy(tenantID), nil
}

func (f *fakePolicies) set(p konstruct.Policy) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]konstruct.Policy{}
	}
	f.m[p.TenantID] = p
}

// fakeRecords keeps the replies rows and votes the router writes.
type fakeRecords struct {
	mu    sync.Mutex
	rows  map[string]konstruct.Reply // by event id: an upsert
	votes map[string]bool            // tenant/team/channel/ts/user → up
}

func (f *fakeRecords) RecordReply(_ context.Context, r konstruct.Reply) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rows == nil {
		f.rows = map[string]konstruct.Reply{}
	}
	f.rows[r.TenantID+"/"+r.EventID] = r
	return nil
}

func (f *fakeRecords) RecordVote(_ context.Context, v konstruct.Vote) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.votes == nil {
		f.votes = map[string]bool{}
	}
	k := v.Post.String() + "/" + v.User
	if up, ok := f.votes[k]; ok && up == v.Up {
		return false, nil
	}
	f.votes[k] = v.Up
	return true, nil
}

func (f *fakeRecords) refused() []konstruct.Reply {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []konstruct.Reply
	for _, r := range f.rows {
		if r.Outcome == konstruct.OutcomeRefused {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeRecords) voteCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.votes)
}

// withPolicies completes a router's deps with the policy side: q for the
// token counters, notes and stops; the default policy and throwaway
// records unless given.
func withPolicies(d router.Deps, q *queue.Queue, pols *fakePolicies, recs *fakeRecords) router.Deps {
	if pols == nil {
		pols = &fakePolicies{}
	}
	if recs == nil {
		recs = &fakeRecords{}
	}
	d.Policies, d.Usage, d.Notes, d.Stops, d.Records, d.Feedback = pols, q, q, q, recs, recs
	return d
}

// testClock is the router's clock, moved by the tests (UTC days).
type testClock struct{ offset atomic.Int64 }

func (c *testClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

func dm(m *konstruct.Message) {
	m.IsDM, m.ChannelType, m.ChannelID, m.EventType = true, konstruct.ChannelIM, "D1", "message"
}

func policy(mod func(*konstruct.Policy)) konstruct.Policy {
	p := konstruct.DefaultPolicy(tenant)
	mod(&p)
	return p
}

// TestOutsidePolicyNothingHappens: a channel message the policy leaves out
// (channel not allowed, channel denied — deny beats allow —, person not
// allowed) is acked and nothing else happens: no placeholder, no note, no
// job, no claim.
func TestOutsidePolicyNothingHappens(t *testing.T) {
	t.Parallel()
	u := newUnit(t, router.Config{}, 0)
	u.pols.set(policy(func(p *konstruct.Policy) {
		p.Channels, p.DenyChannels, p.Users = []string{"C1", "C3"}, []string{"C3"}, []string{human, "UOTHER"}
	}))
	ctx := ctxT(t)
	for name, m := range map[string]konstruct.Message{
		"channel not allowed": msg(func(m *konstruct.Message) { mention(m); m.ChannelID = "C2" }),
		"channel denied":      msg(func(m *konstruct.Message) { mention(m); m.ChannelID = "C3" }),
		"person not allowed":  msg(func(m *konstruct.Message) { mention(m); m.User = "USTRANGER" }),
		"engaged thread, person not allowed": msg(func(m *konstruct.Message) {
			m.ThreadTS, m.User = "1.0", "USTRANGER"
		}),
	} {
		if out, err := u.route(ctx, m); err != nil || out != router.OutsidePolicy {
			t.Errorf("%s: %q, %v; want %q", name, out, err, router.OutsidePolicy)
		}
		if dup, _ := u.q.Claim(ctx, konstruct.Post{TenantID: tenant, TeamID: team, ChannelID: m.ChannelID, TS: m.TS}, "", ""); dup {
			t.Errorf("%s: the post was claimed", name)
		}
	}
	if u.slack.writes() != 0 || u.enq.count() != 0 || len(u.recs.refused()) != 0 {
		t.Errorf("Slack writes %d (%q %q), jobs %d, rows %d", u.slack.writes(), u.slack.posts, u.slack.ephemerals, u.enq.count(), len(u.recs.refused()))
	}
	// Inside it: answered.
	if out, err := u.route(ctx, msg(mention)); err != nil || out != router.Enqueued {
		t.Fatalf("allowed channel and person: %q, %v", out, err)
	}
}

// TestDMOutsidePolicyNotedOncePerDay: a DM the policy leaves out (DMs off,
// or a person not allowed) gets one short note per person per UTC day.
func TestDMOutsidePolicyNotedOncePerDay(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	u := newUnit(t, router.Config{Now: clock.now}, 0)
	u.pols.set(policy(func(p *konstruct.Policy) { p.DMs = false }))
	ctx := ctxT(t)
	for range 3 {
		if out, err := u.route(ctx, msg(dm)); err != nil || out != router.OutsidePolicy {
			t.Fatalf("DM with DMs off: %q, %v", out, err)
		}
	}
	if len(u.slack.posts) != 1 || !strings.HasSuffix(u.slack.posts[0], router.TextNotEnabled) || len(u.slack.ephemerals) != 0 {
		t.Fatalf("posts %q, ephemerals %q; want the note once, in the DM", u.slack.posts, u.slack.ephemerals)
	}
	if n := utf8.RuneCountInString(router.TextNotEnabled); n > 300 {
		t.Errorf("the note is %d characters", n)
	}
	// Another person gets their own note; the first gets another the next UTC day.
	_, _ = u.route(ctx, msg(func(m *konstruct.Message) { dm(m); m.User = "UOTHER" }))
	clock.advance(24 * time.Hour)
	_, _ = u.route(ctx, msg(dm))
	_, _ = u.route(ctx, msg(dm))
	if len(u.slack.posts) != 3 {
		t.Fatalf("posts %q; want 3 notes (first person twice on two days, the other once)", u.slack.posts)
	}
	// DMs on, the person not in the list: noted too; in the list: answered.
	u.pols.set(policy(func(p *konstruct.Policy) { p.Users = []string{"UOTHER"} }))
	if out, _ := u.route(ctx, msg(func(m *konstruct.Message) { dm(m); m.User = "UNEW" })); out != router.OutsidePolicy || len(u.slack.posts) != 4 {
		t.Fatalf("person not allowed: %q, posts %q", out, u.slack.posts)
	}
	if out, err := u.route(ctx, msg(func(m *konstruct.Message) { dm(m); m.User = "UOTHER" })); err != nil || out != router.Enqueued {
		t.Fatalf("allowed person's DM: %q, %v", out, err)
	}
	if u.enq.count() != 1 {
		t.Errorf("%d jobs, want only the allowed person's", u.enq.count())
	}
}

// TestFollowThreads: auto follows an engaged thread; mention answers only
// mentions (with the thread as context); off answers mentions alone.
func TestFollowThreads(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode             konstruct.FollowMode
		followUp         router.Outcome
		alone, dmIsAlone bool
	}{
		{konstruct.FollowAuto, router.Enqueued, false, false},
		{konstruct.FollowMention, router.NotAddressed, false, false},
		{konstruct.FollowOff, router.NotAddressed, true, false},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			t.Parallel()
			u := newUnit(t, router.Config{}, 0)
			u.pols.set(policy(func(p *konstruct.Policy) { p.Follow = tc.mode }))
			ctx := ctxT(t)
			root := nextTS()
			if err := u.q.EngageFor(ctx, tenant, "C1", root, 0); err != nil {
				t.Fatal(err)
			}
			if out, err := u.route(ctx, msg(func(m *konstruct.Message) { m.ThreadTS = root })); err != nil || out != tc.followUp {
				t.Fatalf("follow-up in an engaged thread: %q, %v; want %q", out, err, tc.followUp)
			}
			if out, err := u.route(ctx, msg(func(m *konstruct.Message) { mention(m); m.ThreadTS = root })); err != nil || out != router.Enqueued {
				t.Fatalf("mention in the thread: %q, %v", out, err)
			}
			if out, err := u.route(ctx, msg(dm)); err != nil || out != router.Enqueued {
				t.Fatalf("DM: %q, %v", out, err)
			}
			u.enq.mu.Lock()
			defer u.enq.mu.Unlock()
			mentionJob, dmJob := u.enq.jobs[len(u.enq.jobs)-2], u.enq.jobs[len(u.enq.jobs)-1]
			if mentionJob.Alone != tc.alone || dmJob.Alone != tc.dmIsAlone {
				t.Errorf("Alone: mention %v, DM %v; want %v, %v", mentionJob.Alone, dmJob.Alone, tc.alone, tc.dmIsAlone)
			}
		})
	}
}

// TestBudgetUsedUp: with a budget spent, a question gets one short line
// (at most once per person per UTC day), is recorded as refused, and is
// never queued for the LLM; the next UTC day it is answered again.
func TestBudgetUsedUp(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	u := newUnit(t, router.Config{Now: clock.now}, 0)
	u.pols.set(policy(func(p *konstruct.Policy) { p.TokensPerDay = 100 }))
	ctx := ctxT(t)

	if out, err := u.route(ctx, msg(mention)); err != nil || out != router.Enqueued {
		t.Fatalf("under budget: %q, %v", out, err)
	}
	if _, _, err := u.q.AddTokens(ctx, tenant, clock.now(), 100); err != nil {
		t.Fatal(err)
	}
	for i, m := range []konstruct.Message{
		msg(mention),
		msg(mention), // the same person again: no second line
		msg(func(m *konstruct.Message) { mention(m); m.User = "UOTHER" }),
		msg(func(m *konstruct.Message) { dm(m); m.User = "UTHIRD" }),
	} {
		if out, err := u.route(ctx, m); err != nil || out != router.BudgetExhausted {
			t.Fatalf("#%d over budget: %q, %v", i, out, err)
		}
	}
	line := router.BudgetText(konstruct.PeriodDay, clock.now())
	if len(u.slack.ephemerals) != 2 || len(u.slack.posts) != 2 { // posts: the first question's placeholder, the DM's line
		t.Fatalf("ephemerals %q, posts %q; want the line once to each person", u.slack.ephemerals, u.slack.posts)
	}
	for _, e := range append(u.slack.ephemerals, u.slack.posts[1]) {
		if !strings.HasSuffix(e, line) {
			t.Errorf("%q is not the budget line %q", e, line)
		}
	}
	if line != "Sorry — today's budget is used up; I'm back at 00:00 UTC." || utf8.RuneCountInString(line) > 300 {
		t.Errorf("day line %q", line)
	}
	if u.enq.count() != 1 || len(u.recs.refused()) != 4 {
		t.Fatalf("%d jobs, %d refused rows; want 1 and 4", u.enq.count(), len(u.recs.refused()))
	}
	for _, r := range u.recs.refused() {
		if r.Error != "budget" || r.UserID == "" || r.PostTS == "" {
			t.Errorf("refused row %+v", r)
		}
	}
	clock.advance(24 * time.Hour)
	if out, err := u.route(ctx, msg(mention)); err != nil || out != router.Enqueued {
		t.Fatalf("the next UTC day: %q, %v", out, err)
	}

	// The month's budget: its line says the day it is back.
	u.pols.set(policy(func(p *konstruct.Policy) { p.TokensPerDay, p.TokensPerMonth = 1000000, 50 }))
	if out, _ := u.route(ctx, msg(func(m *konstruct.Message) { mention(m); m.User = "UMONTH" })); out != router.BudgetExhausted {
		t.Fatalf("month used up: %q", out)
	}
	back := konstruct.BudgetReset(konstruct.PeriodMonth, clock.now())
	last := u.slack.ephemerals[len(u.slack.ephemerals)-1]
	if !strings.Contains(last, "this month's budget is used up; I'm back on "+back.Format("2 January")+" at 00:00 UTC") || back.Day() != 1 {
		t.Errorf("month line %q (back %v)", last, back)
	}
}

// TestRateLimitedQuestionsCount: a question over a rate limit is recorded
// as refused, so that usage counts it.
func TestRateLimitedQuestionsCount(t *testing.T) {
	t.Parallel()
	u := newUnit(t, router.Config{}, 1)
	ctx := ctxT(t)
	_, _ = u.route(ctx, msg(mention))
	if out, _ := u.route(ctx, msg(mention)); out != router.RateLimited {
		t.Fatalf("second question: %q", out)
	}
	if rs := u.recs.refused(); len(rs) != 1 || rs[0].Error != konstruct.ERATELIMIT {
		t.Fatalf("refused rows %+v", rs)
	}
}

func click(actionID, value string, mod func(*konstruct.Message)) konstruct.Message {
	m := konstruct.Message{TeamID: team, EventID: "click:" + nextTS(), EventType: "block_actions", ChannelID: "C1", User: human,
		TS: nextTS(), ReceivedAt: time.Now(), Action: &konstruct.Action{ActionID: actionID, Value: value, UserTeamID: team}}
	if mod != nil {
		mod(&m)
	}
	return m
}

// TestClicks: votes are recorded under the click's tenant, one per person
// and changeable; Stop by the asker stops the reply; a click from another
// workspace than the answer's is ignored and writes nothing anywhere.
func TestClicks(t *testing.T) {
	t.Parallel()
	u := newUnit(t, router.Config{}, 0)
	u.tenants.teams["T2"] = konstruct.Workspace{TenantID: "tenant-2", TeamID: "T2", Status: konstruct.WorkspaceActive}
	ctx := ctxT(t)
	ref := konstruct.AnswerRef{TeamID: team, ChannelID: "C1", TS: "1700000000.000100", Asker: human}
	post := konstruct.Post{TenantID: tenant, TeamID: team, ChannelID: "C1", TS: ref.TS}

	for i, step := range []struct {
		m    konstruct.Message
		want router.Outcome
	}{
		{click(konstruct.ActionVoteUp, ref.String(), nil), router.Voted},
		{click(konstruct.ActionVoteDown, ref.String(), nil), router.Voted},
		{click(konstruct.ActionVoteUp, ref.String(), func(m *konstruct.Message) { m.User = "UOTHER" }), router.Voted},
		// Another tenant's workspace (the click's team resolves to tenant-2).
		{click(konstruct.ActionVoteUp, ref.String(), func(m *konstruct.Message) { m.TeamID, m.Action.UserTeamID, m.User = "T2", "T2", "UB" }), router.ForeignClick},
		// A guest from elsewhere in this workspace's channel.
		{click(konstruct.ActionVoteDown, ref.String(), func(m *konstruct.Message) { m.Action.UserTeamID, m.User = "T2", "UB" }), router.ForeignClick},
		{click(konstruct.ActionStop, ref.String(), func(m *konstruct.Message) { m.Action.UserTeamID = "T2" }), router.ForeignClick},
		// A value naming another channel than the message's.
		{click(konstruct.ActionVoteUp, ref.String(), func(m *konstruct.Message) { m.ChannelID = "C9" }), router.ForeignClick},
		{click(konstruct.ActionVoteUp, "not a ref", nil), router.IgnoredClick},
		{click(konstruct.ActionStop, ref.String(), func(m *konstruct.Message) { m.User = "UOTHER" }), router.IgnoredClick}, // not the asker
		{click(konstruct.ActionVoteUp, ref.String(), func(m *konstruct.Message) { m.TeamID, m.Action.UserTeamID = "TGONE", "TGONE" }), router.UnknownWorkspace},
	} {
		if out, err := u.route(ctx, step.m); err != nil || out != step.want {
			t.Fatalf("#%d: %q, %v; want %q", i, out, err, step.want)
		}
	}
	if n := u.recs.voteCount(); n != 2 {
		t.Fatalf("%d votes, want 2 (one per person): %v", n, u.recs.votes)
	}
	if up, ok := u.recs.votes[post.String()+"/"+human]; !ok || up {
		t.Errorf("the asker's vote: %v (recorded %v), want changed to down", up, ok)
	}
	if stopped, _ := u.q.ReplyStopped(ctx, post); stopped {
		t.Fatal("stopped by a foreign click or by someone else than the asker")
	}
	if out, err := u.route(ctx, click(konstruct.ActionStop, ref.String(), nil)); err != nil || out != router.StopRequested {
		t.Fatalf("Stop by the asker: %q, %v", out, err)
	}
	if stopped, _ := u.q.ReplyStopped(ctx, post); !stopped {
		t.Fatal("Stop by the asker did not stop the reply")
	}
	if u.slack.writes() != 0 || u.enq.count() != 0 {
		t.Errorf("clicks wrote in Slack (%d) or queued jobs (%d)", u.slack.writes(), u.enq.count())
	}
	if _, skip := router.Prefilter(click(konstruct.ActionVoteUp, ref.String(), nil)); skip {
		t.Error("the gateway's prefilter drops clicks")
	}
}
