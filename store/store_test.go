package store_test

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/migrations"
	"github.com/konstruct/konstruct/secret"
	"github.com/konstruct/konstruct/store"
)

func code(t *testing.T, err error, want string) {
	t.Helper()
	if got := konstruct.ErrorCode(err); got != want {
		t.Fatalf("err = %v (code %q), want code %q", err, got, want)
	}
}

func TestTenants(t *testing.T) {
	t.Parallel()
	st, _ := testenv.NewStore(t)
	ctx := context.Background()

	acme, err := st.CreateTenant(ctx, "  Acme Corp. (EU)  ", "")
	if err != nil {
		t.Fatal(err)
	}
	if acme.Slug != "acme-corp-eu" || acme.Name != "Acme Corp. (EU)" || acme.ID == "" || acme.CreatedAt.IsZero() {
		t.Fatalf("tenant = %+v", acme)
	}
	_, err = st.CreateTenant(ctx, "Another Acme", "acme-corp-eu")
	code(t, err, konstruct.ECONFLICT)
	if !strings.Contains(konstruct.ErrorMessage(err), "acme-corp-eu") {
		t.Errorf("conflict message %q", konstruct.ErrorMessage(err))
	}
	for _, bad := range []struct{ name, slug string }{{"", ""}, {"x", "Bad Slug"}, {"x", "-x"}, {"!!!", ""}, {"x", acme.ID}} {
		_, err := st.CreateTenant(ctx, bad.name, bad.slug)
		code(t, err, konstruct.EINVALID)
	}
	globex, err := st.CreateTenant(ctx, "Globex", "globex")
	if err != nil {
		t.Fatal(err)
	}

	for _, key := range []string{acme.ID, strings.ToUpper(acme.ID), "acme-corp-eu", " ACME-CORP-EU "} {
		got, err := st.ResolveTenant(ctx, key)
		if err != nil || got.ID != acme.ID || got.Slug != acme.Slug {
			t.Errorf("ResolveTenant(%q) = %+v, %v", key, got, err)
		}
	}
	_, err = st.ResolveTenant(ctx, "nobody")
	code(t, err, konstruct.ENOTFOUND)

	all, err := st.ListTenants(ctx)
	if err != nil || len(all) != 2 || all[0].ID != acme.ID || all[1].ID != globex.ID {
		t.Fatalf("ListTenants = %+v, %v", all, err)
	}
}

func TestAgents(t *testing.T) {
	t.Parallel()
	st, _ := testenv.NewStore(t)
	ctx := context.Background()
	ten, _ := st.CreateTenant(ctx, "Acme", "")

	_, err := st.ActiveAgent(ctx, ten.ID)
	code(t, err, konstruct.ENOTFOUND)
	_, err = st.SetAgent(ctx, konstruct.Agent{TenantID: ten.ID})
	code(t, err, konstruct.EINVALID)
	_, err = st.SetAgent(ctx, konstruct.Agent{TenantID: "00000000-0000-4000-8000-000000000000", Name: "x"})
	if konstruct.ErrorCode(err) == "" {
		t.Fatal("agent for an unknown tenant was stored")
	}

	first, err := st.SetAgent(ctx, konstruct.Agent{TenantID: ten.ID, Name: "Mara", Role: "Support", Persona: "warm", Model: "llama3"})
	if err != nil {
		t.Fatal(err)
	}
	second, err := st.SetAgent(ctx, konstruct.Agent{TenantID: ten.ID, Name: "Mara", Role: "Sales", Persona: "bold", Instructions: "be brief"})
	if err != nil {
		t.Fatal(err)
	}
	if second.ID != first.ID || !second.UpdatedAt.After(first.UpdatedAt) && !second.UpdatedAt.Equal(first.UpdatedAt) {
		t.Errorf("SetAgent should update the active agent in place: %+v then %+v", first, second)
	}
	got, err := st.ActiveAgent(ctx, ten.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != first.ID || got.Role != "Sales" || got.Persona != "bold" || got.Instructions != "be brief" || got.Model != "" || !got.Active || got.TenantID != ten.ID {
		t.Errorf("ActiveAgent = %+v", got)
	}
	_, err = st.ActiveAgent(ctx, "not-a-uuid")
	code(t, err, konstruct.EINVALID)
}

func TestWorkspaceTokensEncrypted(t *testing.T) {
	t.Parallel()
	st, pg := testenv.NewStore(t)
	ctx := context.Background()
	ten, _ := st.CreateTenant(ctx, "Acme", "")
	const appTok, botTok = "xapp-1-A1-123-appsecretvalue", "xoxb-1-234-botsecretvalue"

	w, err := st.AddWorkspace(ctx, konstruct.Workspace{
		TenantID: ten.ID, TeamID: "T1", TeamName: "Acme HQ", EnterpriseID: "E1", AppID: "A1",
		BotUserID: "U1", BotID: "B1", AppToken: appTok, BotToken: botTok,
	})
	if err != nil {
		t.Fatal(err)
	}
	if w.ID == "" || w.Status != konstruct.WorkspaceActive {
		t.Fatalf("AddWorkspace = %+v", w)
	}

	// Raw bytes, read past RLS as the administrator: no token in sight.
	admin := openPool(t, pg.AdminURL)
	var appEnc, botEnc []byte
	var keyID string
	if err := admin.QueryRow(ctx, "SELECT app_token_enc, bot_token_enc, key_id FROM workspaces WHERE team_id = 'T1'").Scan(&appEnc, &botEnc, &keyID); err != nil {
		t.Fatal(err)
	}
	for _, enc := range [][]byte{appEnc, botEnc} {
		if len(enc) == 0 || bytes.Contains(enc, []byte("secretvalue")) || bytes.Contains(enc, []byte("xox")) || bytes.Contains(enc, []byte("xapp")) {
			t.Fatalf("stored token is not encrypted: %q", enc)
		}
	}
	keyID, bound := secret.ParseKeyRef(keyID)
	if !bound || len(keyID) != 8 {
		t.Errorf("key_id %q, want v2: and the key id", keyID)
	}

	active, err := st.ActiveWorkspaces(ctx)
	if err != nil || len(active) != 1 {
		t.Fatalf("ActiveWorkspaces = %v, %v", active, err)
	}
	a := active[0]
	if a.AppToken != appTok || a.BotToken != botTok || a.TeamName != "Acme HQ" || a.EnterpriseID != "E1" || a.AppID != "A1" || a.BotID != "B1" || a.TenantID != ten.ID {
		t.Errorf("ActiveWorkspaces[0] = %+v (tokens match: %v)", a, a.AppToken == appTok && a.BotToken == botTok)
	}
	listed, err := st.ListWorkspaces(ctx)
	if err != nil || len(listed) != 1 || listed[0].AppToken != "" || listed[0].BotToken != "" || listed[0].TeamID != "T1" {
		t.Fatalf("ListWorkspaces = %+v, %v", listed, err)
	}

	// Another key: the workspace is listed without tokens, its problem
	// naming team and key id and the fix, never the token.
	other, _ := secret.NewBox(testenv.SecretKey())
	wrong := testenv.OpenStore(t, pg.RuntimeURL, other)
	got, err := wrong.ActiveWorkspaces(ctx)
	if err != nil || len(got) != 1 || got[0].TeamID != "T1" || got[0].AppToken != "" || got[0].BotToken != "" {
		t.Fatalf("wrong key: ActiveWorkspaces = %+v, %v", got, err)
	}
	msg := got[0].Problem
	if !strings.Contains(msg, "T1") || !strings.Contains(msg, keyID) || !strings.Contains(msg, "secret_key") {
		t.Errorf("wrong-key problem lacks team, key id or hint: %q", msg)
	}
	t.Logf("wrong key: %s", msg)
	if strings.Contains(msg, "secretvalue") {
		t.Errorf("wrong-key problem leaks a token: %s", msg)
	}

	// Tampered ciphertext: detected, not decrypted into garbage; a second
	// workspace, intact, is still served beside it.
	if _, err := admin.Exec(ctx, "UPDATE workspaces SET bot_token_enc = set_byte(bot_token_enc, 20, get_byte(bot_token_enc, 20) # 1)"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddWorkspace(ctx, konstruct.Workspace{TenantID: ten.ID, TeamID: "T3", BotUserID: "U3", AppToken: "xapp-3-secretvalue", BotToken: "xoxb-3-secretvalue"}); err != nil {
		t.Fatal(err)
	}
	got, err = st.ActiveWorkspaces(ctx)
	if err != nil || len(got) != 2 {
		t.Fatalf("tampered: ActiveWorkspaces = %+v, %v", got, err)
	}
	for _, w := range got {
		switch w.TeamID {
		case "T1":
			if w.BotToken != "" || w.AppToken != "" || !strings.Contains(w.Problem, "do not authenticate") || strings.Contains(w.Problem, "secretvalue") {
				t.Errorf("tampered T1 = %+v", w)
			}
		case "T3":
			if w.Problem != "" || w.BotToken != "xoxb-3-secretvalue" {
				t.Errorf("intact T3 beside it = %+v", w)
			}
		}
	}

	// No key at all.
	none := testenv.OpenStore(t, pg.RuntimeURL, nil)
	_, err = none.ActiveWorkspaces(ctx)
	code(t, err, konstruct.EINVALID)
	_, err = none.AddWorkspace(ctx, konstruct.Workspace{TenantID: ten.ID, TeamID: "T2", AppToken: "xapp-x", BotToken: "xoxb-x"})
	code(t, err, konstruct.EINVALID)
	if _, err := none.ListWorkspaces(ctx); err != nil {
		t.Errorf("ListWorkspaces without a key: %v", err)
	}
}

func TestWorkspaceLifecycle(t *testing.T) {
	t.Parallel()
	st, _ := testenv.NewStore(t)
	ctx := context.Background()
	a, _ := st.CreateTenant(ctx, "Acme", "")
	b, _ := st.CreateTenant(ctx, "Globex", "")
	add := func(tenant, team, suffix string) (konstruct.Workspace, error) {
		return st.AddWorkspace(ctx, konstruct.Workspace{TenantID: tenant, TeamID: team, BotUserID: "U" + suffix,
			AppToken: "xapp-" + suffix, BotToken: "xoxb-" + suffix})
	}

	first, err := add(a.ID, "T1", "one")
	if err != nil {
		t.Fatal(err)
	}
	_, err = add(b.ID, "T1", "two")
	code(t, err, konstruct.ECONFLICT)
	if strings.Contains(err.Error(), "xoxb") {
		t.Errorf("error leaks a token: %v", err)
	}

	// Same tenant again: tokens and details replaced, same row.
	again, err := add(a.ID, "T1", "three")
	if err != nil || again.ID != first.ID {
		t.Fatalf("re-add = %+v, %v", again, err)
	}
	active, _ := st.ActiveWorkspaces(ctx)
	if len(active) != 1 || active[0].BotToken != "xoxb-three" || active[0].BotUserID != "Uthree" {
		t.Fatalf("after re-add: %+v", active)
	}

	got, err := st.TenantForTeam(ctx, "T1")
	if err != nil || got.TenantID != a.ID || got.ID != first.ID || got.BotUserID != "Uthree" || got.Status != konstruct.WorkspaceActive || got.BotToken != "" {
		t.Fatalf("TenantForTeam = %+v, %v", got, err)
	}
	_, err = st.TenantForTeam(ctx, "T404")
	code(t, err, konstruct.ENOTFOUND)

	if err := st.SetWorkspaceStatus(ctx, "T1", konstruct.WorkspaceRevoked); err != nil {
		t.Fatal(err)
	}
	if active, _ := st.ActiveWorkspaces(ctx); len(active) != 0 {
		t.Fatalf("revoked workspace still active: %+v", active)
	}
	if err := st.SetWorkspaceStatus(ctx, "T1", konstruct.WorkspaceActive); err != nil {
		t.Fatal(err)
	}
	code(t, st.SetWorkspaceStatus(ctx, "T1", "bogus"), konstruct.EINVALID)
	code(t, st.SetWorkspaceStatus(ctx, "T404", konstruct.WorkspaceRevoked), konstruct.ENOTFOUND)

	// A reply keeps pointing at the workspace after removal.
	if err := st.RecordReply(ctx, konstruct.Reply{TenantID: a.ID, WorkspaceID: first.ID, TeamID: "T1", EventID: "Ev1"}); err != nil {
		t.Fatal(err)
	}
	if err := st.RemoveWorkspace(ctx, "T1"); err != nil {
		t.Fatal(err)
	}
	code(t, st.RemoveWorkspace(ctx, "T404"), konstruct.ENOTFOUND)
	if active, _ := st.ActiveWorkspaces(ctx); len(active) != 0 {
		t.Fatalf("removed workspace still active: %+v", active)
	}
	listed, _ := st.ListWorkspaces(ctx)
	if len(listed) != 1 || listed[0].Status != konstruct.WorkspaceRemoved {
		t.Fatalf("ListWorkspaces after remove = %+v", listed)
	}
	// Its tokens are gone, so it cannot just be switched back on.
	code(t, st.SetWorkspaceStatus(ctx, "T1", konstruct.WorkspaceActive), konstruct.EINVALID)
	if rs, err := st.Replies(ctx, a.ID, 10); err != nil || len(rs) != 1 || rs[0].WorkspaceID != first.ID {
		t.Fatalf("replies after remove = %+v, %v", rs, err)
	}
	// Adding it again brings it back, same row.
	back, err := add(a.ID, "T1", "four")
	if err != nil || back.ID != first.ID {
		t.Fatalf("re-add after remove = %+v, %v", back, err)
	}
	if active, _ := st.ActiveWorkspaces(ctx); len(active) != 1 || active[0].AppToken != "xapp-four" {
		t.Fatalf("after re-add: %+v", active)
	}
}

func TestRekeyWorkspaces(t *testing.T) {
	t.Parallel()
	pg := testenv.NewPG(t)
	ctx := context.Background()
	oldKey, newKey := testenv.SecretKey(), testenv.SecretKey()
	oldBox, _ := secret.NewBox(oldKey)
	st := testenv.OpenStore(t, pg.RuntimeURL, oldBox)
	for _, slug := range []string{"acme", "globex"} {
		ten, _ := st.CreateTenant(ctx, slug, slug)
		if _, err := st.AddWorkspace(ctx, konstruct.Workspace{TenantID: ten.ID, TeamID: "T" + slug, AppToken: "xapp-" + slug, BotToken: "xoxb-" + slug}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := st.RekeyWorkspaces(ctx); err != nil || n != 0 {
		t.Fatalf("rekey under the same key = %d, %v", n, err)
	}

	rotBox, _ := secret.NewBox(newKey, oldKey)
	rot := testenv.OpenStore(t, pg.RuntimeURL, rotBox)
	n, err := rot.RekeyWorkspaces(ctx)
	if err != nil || n != 2 {
		t.Fatalf("RekeyWorkspaces = %d, %v", n, err)
	}
	if n, err := rot.RekeyWorkspaces(ctx); err != nil || n != 0 {
		t.Fatalf("second rekey = %d, %v", n, err)
	}
	newBox, _ := secret.NewBox(newKey)
	fresh := testenv.OpenStore(t, pg.RuntimeURL, newBox)
	ws, err := fresh.ActiveWorkspaces(ctx)
	if err != nil || len(ws) != 2 || ws[0].BotToken != "xoxb-acme" || ws[1].AppToken != "xapp-globex" {
		t.Fatalf("after rekey, new key alone: %+v, %v", ws, err)
	}
	if ws, err := st.ActiveWorkspaces(ctx); err != nil || len(ws) != 2 || ws[0].Problem == "" || ws[1].Problem == "" || ws[0].BotToken != "" {
		t.Fatalf("old key after rekey: %+v, %v (want both listed with a problem, no token)", ws, err)
	}
}

func TestListenWorkspaces(t *testing.T) {
	t.Parallel()
	st, _ := testenv.NewStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ten, _ := st.CreateTenant(ctx, "Acme", "")

	calls := make(chan struct{}, 16)
	var total atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- st.ListenWorkspaces(ctx, func() {
			total.Add(1)
			calls <- struct{}{}
		})
	}()
	wait := func(what string) {
		t.Helper()
		select {
		case <-calls:
		case <-time.After(10 * time.Second):
			t.Fatalf("no call after %s", what)
		}
	}
	wait("connect") // listening from here on

	if _, err := st.AddWorkspace(ctx, konstruct.Workspace{TenantID: ten.ID, TeamID: "T1", AppToken: "xapp-1", BotToken: "xoxb-1"}); err != nil {
		t.Fatal(err)
	}
	wait("add")
	if err := st.RemoveWorkspace(ctx, "T1"); err != nil {
		t.Fatal(err)
	}
	wait("remove")
	// Unrelated writes do not notify.
	if err := st.RecordReply(ctx, konstruct.Reply{TenantID: ten.ID, EventID: "Ev1"}); err != nil {
		t.Fatal(err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ListenWorkspaces returned %v after cancel, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ListenWorkspaces did not return after cancel")
	}
	if n := total.Load(); n != 3 {
		t.Errorf("fn called %d times, want 3 (connect, add, remove)", n)
	}
}

func TestRecordReplyIdempotent(t *testing.T) {
	t.Parallel()
	st, _ := testenv.NewStore(t)
	ctx := context.Background()
	a, _ := st.CreateTenant(ctx, "Acme", "")
	b, _ := st.CreateTenant(ctx, "Globex", "")
	w, _ := st.AddWorkspace(ctx, konstruct.Workspace{TenantID: a.ID, TeamID: "T1", AppToken: "xapp-1", BotToken: "xoxb-1"})

	r := konstruct.Reply{
		TenantID: a.ID, WorkspaceID: w.ID, TeamID: "T1", ChannelID: "C1", ThreadTS: "1.1", MessageTS: "1.2",
		EventID: "Ev1", Model: "llama3", Provider: "ollama", Outcome: konstruct.OutcomeError,
		Error: "llm timeout with xoxb-leaked-token", TimeToFirstToken: 1500 * time.Millisecond, Latency: 3 * time.Second,
	}
	if err := st.RecordReply(ctx, r); err != nil {
		t.Fatal(err)
	}
	r.Outcome, r.Error, r.PromptTokens, r.CompletionTokens = konstruct.OutcomeAnswered, "", 120, 45
	for range 2 {
		if err := st.RecordReply(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// The same event id in another tenant is another reply.
	if err := st.RecordReply(ctx, konstruct.Reply{TenantID: b.ID, EventID: "Ev1"}); err != nil {
		t.Fatal(err)
	}
	code(t, st.RecordReply(ctx, konstruct.Reply{TenantID: a.ID}), konstruct.EINVALID)
	// A workspace of another tenant cannot be named.
	if err := st.RecordReply(ctx, konstruct.Reply{TenantID: b.ID, WorkspaceID: w.ID, EventID: "Ev2"}); err == nil {
		t.Fatal("reply of tenant B recorded against tenant A's workspace")
	}

	rs, err := st.Replies(ctx, a.ID, 0)
	if err != nil || len(rs) != 1 {
		t.Fatalf("Replies = %+v, %v", rs, err)
	}
	got := rs[0]
	if got.Outcome != konstruct.OutcomeAnswered || got.Error != "" || got.PromptTokens != 120 || got.CompletionTokens != 45 ||
		got.TimeToFirstToken != 1500*time.Millisecond || got.Latency != 3*time.Second || got.WorkspaceID != w.ID ||
		got.ThreadTS != "1.1" || got.MessageTS != "1.2" || got.Model != "llama3" || got.Provider != "ollama" || got.CreatedAt.IsZero() {
		t.Errorf("reply = %+v", got)
	}
	if rs, _ := st.Replies(ctx, b.ID, 10); len(rs) != 1 || rs[0].EventID != "Ev1" || rs[0].TenantID != b.ID || rs[0].WorkspaceID != "" {
		t.Errorf("tenant B replies = %+v", rs)
	}
	// Without a workspace id, the tenant's own workspace of the team is found…
	if err := st.RecordReply(ctx, konstruct.Reply{TenantID: a.ID, TeamID: "T1", EventID: "Ev3"}); err != nil {
		t.Fatal(err)
	}
	if rs, _ := st.Replies(ctx, a.ID, 10); len(rs) != 2 || rs[0].EventID != "Ev3" && rs[1].EventID != "Ev3" {
		t.Errorf("replies = %+v", rs)
	} else {
		for _, r := range rs {
			if r.WorkspaceID != w.ID {
				t.Errorf("reply %s workspace = %q, want %q", r.EventID, r.WorkspaceID, w.ID)
			}
		}
	}
	// …but never another tenant's: RLS hides it from the lookup.
	if err := st.RecordReply(ctx, konstruct.Reply{TenantID: b.ID, TeamID: "T1", EventID: "Ev4"}); err != nil {
		t.Fatal(err)
	}
	for _, r := range mustReplies(t, st, b.ID) {
		if r.WorkspaceID != "" {
			t.Errorf("tenant B reply %s got workspace %q", r.EventID, r.WorkspaceID)
		}
	}

	// Errors are stored redacted.
	if err := st.RecordReply(ctx, konstruct.Reply{TenantID: a.ID, EventID: "Ev3", Error: "failed: xoxb-123-secret"}); err != nil {
		t.Fatal(err)
	}
	rs, _ = st.Replies(ctx, a.ID, 1)
	if len(rs) != 1 || strings.Contains(rs[0].Error, "secret") {
		t.Errorf("stored error not redacted: %+v", rs)
	}
}

func TestMigrationsCurrent(t *testing.T) {
	t.Parallel()
	st, _ := testenv.NewStore(t)
	cur, latest, err := st.MigrationsCurrent(context.Background())
	if err != nil || cur != latest || latest != migrations.Latest() || latest < 1 {
		t.Fatalf("MigrationsCurrent = %d, %d, %v", cur, latest, err)
	}
}

func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := store.Open(ctx, "postgres://nobody:pw@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", nil, nil)
	code(t, err, konstruct.EUNAVAILABLE)
	_, err = store.Open(ctx, "postgres://%zz", nil, nil)
	code(t, err, konstruct.EINVALID)
}

func TestSlugify(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"Acme":             "acme",
		"Acme Corp. (EU)":  "acme-corp-eu",
		"  --Déjà vu 42--": "d-j-vu-42",
		"!!!":              "",
	} {
		if got := store.Slugify(in); got != want {
			t.Errorf("Slugify(%q) = %q, want %q", in, got, want)
		}
	}
}

func mustReplies(t *testing.T, st *store.Store, tenantID string) []konstruct.Reply {
	t.Helper()
	rs, err := st.Replies(context.Background(), tenantID, 100)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}
