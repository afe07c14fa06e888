package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/store"
)

// TestVotesOnePerPersonChangeable: a person's vote on an answer is one
// row, replaced by a vote the other way; the same vote again changes
// nothing; another tenant's vote on the same post names is its own.
func TestVotesOnePerPersonChangeable(t *testing.T) {
	t.Parallel()
	st, _ := testenv.NewStore(t)
	ctx := context.Background()
	a, _ := st.CreateTenant(ctx, "Alpha", "")
	b, _ := st.CreateTenant(ctx, "Beta", "")
	post := konstruct.Post{TenantID: a.ID, TeamID: "T1", ChannelID: "C1", TS: "1700000000.000100"}

	for i, step := range []struct {
		user        string
		up, changed bool
	}{
		{"U1", true, true},
		{"U1", true, false}, // a second click, or the record routed again
		{"U1", false, true}, // changed
		{"U2", true, true},
	} {
		changed, err := st.RecordVote(ctx, konstruct.Vote{Post: post, User: step.user, Up: step.up})
		if err != nil || changed != step.changed {
			t.Fatalf("step %d: changed = %v, %v; want %v", i, changed, err, step.changed)
		}
	}
	votes, err := st.Votes(ctx, post)
	if err != nil || len(votes) != 2 || votes["U1"] || !votes["U2"] {
		t.Fatalf("votes = %v, %v; want U1 down, U2 up", votes, err)
	}
	// The same names under another tenant are another answer.
	other := post
	other.TenantID = b.ID
	if votes, err := st.Votes(ctx, other); err != nil || len(votes) != 0 {
		t.Fatalf("tenant b sees votes %v, %v", votes, err)
	}
	if _, err := st.RecordVote(ctx, konstruct.Vote{Post: konstruct.Post{TenantID: a.ID}, User: "U1"}); konstruct.ErrorCode(err) != konstruct.EINVALID {
		t.Fatalf("vote without a post: %v", err)
	}
}

func ms(n int64) *int64 { return &n }

// TestUsageFigures: every figure of konstruct usage over a window, in
// total and by day, channel and user; rows outside the window and another
// tenant's rows count for nothing.
func TestUsageFigures(t *testing.T) {
	t.Parallel()
	st, pg := testenv.NewStore(t)
	ctx := context.Background()
	a, _ := st.CreateTenant(ctx, "Alpha", "")
	b, _ := st.CreateTenant(ctx, "Beta", "")
	now := time.Now().UTC()
	yesterday := now.Add(-24 * time.Hour)

	type row struct {
		id, outcome, channel, user, post string
		in, out                          int
		ttft, answer                     time.Duration
		at                               time.Time
	}
	rows := []row{
		{"Ev1", konstruct.OutcomeAnswered, "C1", "U1", "1.1", 100, 50, 100 * time.Millisecond, time.Second, yesterday},
		{"Ev2", konstruct.OutcomeAnswered, "C1", "U2", "1.2", 200, 100, 300 * time.Millisecond, 3 * time.Second, now},
		{"Ev3", konstruct.OutcomeStopped, "C2", "U1", "1.3", 10, 5, 200 * time.Millisecond, 2 * time.Second, now},
		{"Ev4", konstruct.OutcomeError, "C2", "U2", "1.4", 0, 0, 0, 0, now},
		{"Ev5", konstruct.OutcomeRefused, "C1", "U1", "1.5", 0, 0, 0, 0, now},
		{"Ev6", konstruct.OutcomeAnswered, "C1", "U1", "1.6", 1000, 1000, time.Second, time.Second, now.Add(-40 * 24 * time.Hour)},
	}
	admin, err := pgx.Connect(ctx, pg.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, tn := range []string{a.ID, b.ID} {
		for _, r := range rows {
			if tn == b.ID && r.id != "Ev2" {
				continue
			}
			err := st.RecordReply(ctx, konstruct.Reply{TenantID: tn, TeamID: "T1", ChannelID: r.channel, EventID: r.id, Outcome: r.outcome,
				PromptTokens: r.in, CompletionTokens: r.out, TimeToFirstToken: r.ttft, AnswerTime: r.answer, UserID: r.user, PostTS: r.post})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := admin.Exec(ctx, "UPDATE replies SET created_at = $1 WHERE tenant_id = $2 AND event_id = $3", r.at, tn, r.id); err != nil {
				t.Fatal(err)
			}
		}
	}
	vote := func(tenant, post, user string, up bool) {
		t.Helper()
		if _, err := st.RecordVote(ctx, konstruct.Vote{Post: konstruct.Post{TenantID: tenant, TeamID: "T1", ChannelID: map[string]string{
			"1.1": "C1", "1.2": "C1", "1.3": "C2"}[post], TS: post}, User: user, Up: up}); err != nil {
			t.Fatal(err)
		}
	}
	vote(a.ID, "1.1", "U1", true)
	vote(a.ID, "1.1", "U2", true)
	vote(a.ID, "1.2", "U1", false)
	vote(a.ID, "1.3", "U3", true)
	vote(a.ID, "1.3", "U3", false) // changed
	vote(b.ID, "1.2", "U9", true)  // another tenant's: not a's

	rep, err := st.Usage(ctx, a.ID, now.Add(-30*24*time.Hour), now.Add(time.Minute), store.UsageByDay)
	if err != nil {
		t.Fatal(err)
	}
	want := store.UsageFigures{Questions: 5, Answers: 3, Errors: 1, TokensIn: 310, TokensOut: 155,
		TTFTP50: ms(200), TTFTP95: ms(290), AnswerP50: ms(2000), AnswerP95: ms(2900), FeedbackUp: 2, FeedbackDown: 2}
	same(t, "total", rep.Total, want)
	if len(rep.Rows) != 2 || rep.Rows[0].Key != yesterday.Format("2006-01-02") || rep.Rows[1].Key != now.Format("2006-01-02") {
		t.Fatalf("by day: %+v", rep.Rows)
	}
	same(t, "yesterday", rep.Rows[0].UsageFigures, store.UsageFigures{Questions: 1, Answers: 1, TokensIn: 100, TokensOut: 50,
		TTFTP50: ms(100), TTFTP95: ms(100), AnswerP50: ms(1000), AnswerP95: ms(1000), FeedbackUp: 2})
	same(t, "today", rep.Rows[1].UsageFigures, store.UsageFigures{Questions: 4, Answers: 2, Errors: 1, TokensIn: 210, TokensOut: 105,
		TTFTP50: ms(250), TTFTP95: ms(295), AnswerP50: ms(2500), AnswerP95: ms(2950), FeedbackDown: 2})

	rep, err = st.Usage(ctx, a.ID, now.Add(-30*24*time.Hour), now.Add(time.Minute), store.UsageByChannel)
	if err != nil || len(rep.Rows) != 2 || rep.Rows[0].Key != "C1" || rep.Rows[1].Key != "C2" {
		t.Fatalf("by channel: %+v, %v", rep.Rows, err)
	}
	if c1, c2 := rep.Rows[0], rep.Rows[1]; c1.Questions != 3 || c1.Answers != 2 || c1.FeedbackUp != 2 || c1.FeedbackDown != 1 ||
		c2.Questions != 2 || c2.Errors != 1 || c2.FeedbackDown != 1 {
		t.Errorf("by channel: %+v", rep.Rows)
	}
	rep, err = st.Usage(ctx, a.ID, now.Add(-30*24*time.Hour), now.Add(time.Minute), store.UsageByUser)
	if err != nil || len(rep.Rows) != 2 || rep.Rows[0].Key != "U1" || rep.Rows[0].Questions != 3 || rep.Rows[1].Key != "U2" || rep.Rows[1].Questions != 2 {
		t.Fatalf("by user: %+v, %v", rep.Rows, err)
	}
	// No grouping: the total only; an empty window: zeros and no timings.
	rep, err = st.Usage(ctx, a.ID, now.Add(-30*24*time.Hour), now.Add(time.Minute), "")
	if err != nil || rep.Rows != nil || rep.Total.Questions != 5 {
		t.Fatalf("total only: %+v, %v", rep, err)
	}
	rep, err = st.Usage(ctx, a.ID, now.Add(-time.Hour*24*365), now.Add(-time.Hour*24*300), store.UsageByDay)
	if err != nil || len(rep.Rows) != 0 {
		t.Fatalf("empty window: %+v, %v", rep, err)
	}
	same(t, "empty window", rep.Total, store.UsageFigures{})
	if _, err := st.Usage(ctx, a.ID, now, now, "week"); konstruct.ErrorCode(err) != konstruct.EINVALID {
		t.Fatalf("by week: %v", err)
	}
}

func same(t *testing.T, what string, got, want store.UsageFigures) {
	t.Helper()
	p := func(v *int64) any {
		if v == nil {
			return nil
		}
		return *v
	}
	g := []any{got.Questions, got.Answers, got.Errors, got.TokensIn, got.TokensOut, p(got.TTFTP50), p(got.TTFTP95), p(got.AnswerP50), p(got.AnswerP95), got.FeedbackUp, got.FeedbackDown}
	w := []any{want.Questions, want.Answers, want.Errors, want.TokensIn, want.TokensOut, p(want.TTFTP50), p(want.TTFTP95), p(want.AnswerP50), p(want.AnswerP95), want.FeedbackUp, want.FeedbackDown}
	for i := range g {
		if g[i] != w[i] {
			t.Errorf("%s: got %v, want %v", what, g, w)
			return
		}
	}
}
