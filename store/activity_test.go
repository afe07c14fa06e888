package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
)

// TestWorkspaceActivity: per workspace, the last answer and the answers
// and errors of the window, each tenant's counted apart under RLS;
// removed workspaces are left out.
func TestWorkspaceActivity(t *testing.T) {
	t.Parallel()
	st, pg := testenv.NewStore(t)
	ctx := context.Background()
	acme, _ := st.CreateTenant(ctx, "Acme", "acme")
	globex, _ := st.CreateTenant(ctx, "Globex", "globex")
	for _, w := range []konstruct.Workspace{
		{TenantID: acme.ID, TeamID: "TA1", TeamName: "Acme HQ"},
		{TenantID: acme.ID, TeamID: "TA2"},
		{TenantID: globex.ID, TeamID: "TG1"},
		{TenantID: globex.ID, TeamID: "TGX"},
	} {
		w.AppToken, w.BotToken = "xapp-1-A-1-x", "xoxb-1-x"
		if _, err := st.AddWorkspace(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.RemoveWorkspace(ctx, "TGX"); err != nil {
		t.Fatal(err)
	}
	n := 0
	rec := func(tenant, team, outcome string) {
		t.Helper()
		n++
		if err := st.RecordReply(ctx, konstruct.Reply{TenantID: tenant, TeamID: team, ChannelID: "C1", EventID: "Ev" + string(rune('a'+n)), Outcome: outcome}); err != nil {
			t.Fatal(err)
		}
	}
	rec(acme.ID, "TA1", konstruct.OutcomeAnswered)
	rec(acme.ID, "TA1", konstruct.OutcomeError)
	rec(acme.ID, "TA1", konstruct.OutcomeOrphaned)
	rec(globex.ID, "TG1", konstruct.OutcomeAnswered)
	rec(globex.ID, "TG1", konstruct.OutcomeAnswered)
	// Two hours ago: TG1's answers leave the window but stay its last answer.
	conn, err := pgx.Connect(ctx, pg.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE replies SET created_at = now() - interval '2 hours' WHERE team_id = 'TG1'`); err != nil {
		t.Fatal(err)
	}

	got, err := st.WorkspaceActivity(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]struct {
		slug, name       string
		answers, errs    int
		lastAnswerWithin time.Duration
		never            bool
	}{}
	for _, a := range got {
		e := by[a.TeamID]
		e.slug, e.name, e.answers, e.errs, e.never = a.TenantSlug, a.TeamName, a.Answers, a.Errors, a.LastAnswer.IsZero()
		e.lastAnswerWithin = time.Since(a.LastAnswer)
		by[a.TeamID] = e
	}
	if len(got) != 3 {
		t.Fatalf("%d workspaces, want 3 (TGX is removed): %+v", len(got), got)
	}
	if a := by["TA1"]; a.slug != "acme" || a.name != "Acme HQ" || a.answers != 1 || a.errs != 2 || a.lastAnswerWithin > time.Minute {
		t.Errorf("TA1 = %+v", a)
	}
	if a := by["TA2"]; a.slug != "acme" || a.answers != 0 || a.errs != 0 || !a.never {
		t.Errorf("TA2 = %+v", a)
	}
	if a := by["TG1"]; a.slug != "globex" || a.answers != 0 || a.errs != 0 || a.never || a.lastAnswerWithin < 119*time.Minute {
		t.Errorf("TG1 = %+v", a)
	}
}
