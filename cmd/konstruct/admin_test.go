package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/slacksim"
	"github.com/konstruct/konstruct/store"
)

var uuidLine = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\n$`)

// adminQuery runs a query as the administrator, under no RLS.
func adminQuery(t *testing.T, url, sql string, args ...any) pgx.Rows {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return rows
}

func adminCount(t *testing.T, url, sql string, args ...any) int {
	t.Helper()
	rows := adminQuery(t, url, sql, args...)
	n, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMigrateConcurrentlyAsOwner(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db, err := store.Provision(ctx, testenv.PGAdminURL(), "kt_mig_"+randomHex(4))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Drop(context.Background()) })
	vars := map[string]string{"KONSTRUCT_DATABASE_URL": db.RuntimeURL, "KONSTRUCT_DATABASE_MIGRATE_URL": db.OwnerURL}

	// Before migrate the runtime role can do nothing.
	if r := cli(t, vars, "tenant", "list"); r.err == nil {
		t.Fatal("tenant list before migrate succeeded")
	}
	var wg sync.WaitGroup
	results := make([]result, 2)
	for i := range results {
		wg.Go(func() { results[i] = cli(t, vars, "migrate") })
	}
	wg.Wait()
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("concurrent migrate %d: %s", i, r.line())
		}
		if r.stdout != "" {
			t.Errorf("migrate printed on stdout: %q", r.stdout)
		}
	}
	mustCLI(t, vars, "migrate") // and once more: idempotent
	if out := mustCLI(t, vars, "tenant", "create", "--name", "After Migrate").stdout; !uuidLine.MatchString(out) {
		t.Errorf("tenant create after migrate printed %q", out)
	}
	// The runtime role was granted, not made owner.
	if n := adminCount(t, db.AdminURL, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = $1`, db.RuntimeRole); n != 0 {
		t.Errorf("runtime role owns %d tables", n)
	}
}

func TestTenantCreateAndList(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})

	out := mustCLI(t, e.vars, "tenant", "create", "--name", "Acme Corp").stdout
	if !uuidLine.MatchString(out) {
		t.Fatalf("tenant create printed %q, want the id alone", out)
	}
	acme := strings.TrimSpace(out)
	out = mustCLI(t, e.vars, "tenant", "create", "--name", "Globex", "--slug", "gx").stdout
	if !uuidLine.MatchString(out) {
		t.Fatalf("tenant create --slug printed %q", out)
	}
	gx := strings.TrimSpace(out)

	for _, tc := range []struct {
		name string
		args []string
		want []string // in the error line
	}{
		{"duplicate slug", []string{"tenant", "create", "--name", "Other", "--slug", "gx"}, []string{`"gx"`, "already exists"}},
		{"duplicate derived slug", []string{"tenant", "create", "--name", "acme corp"}, []string{`"acme-corp"`, "already exists"}},
		{"bad slug", []string{"tenant", "create", "--name", "X", "--slug", "No Spaces"}, []string{"slug", "lower-case"}},
		{"no name", []string{"tenant", "create"}, []string{"--name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := failCLI(t, e.vars, tc.want, tc.args...)
			if r.stdout != "" {
				t.Errorf("stdout %q on failure", r.stdout)
			}
		})
	}

	list := mustCLI(t, e.vars, "tenant", "list").stdout
	lines := strings.Split(strings.TrimSpace(list), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") {
		t.Fatalf("tenant list:\n%s", list)
	}
	for _, want := range [][]string{{acme, "acme-corp", "Acme Corp"}, {gx, "gx", "Globex"}} {
		found := false
		for _, l := range lines[1:] {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == want[0] && f[1] == want[1] && strings.Contains(l, want[2]) {
				found = true
			}
		}
		if !found {
			t.Errorf("tenant list lacks %v:\n%s", want, list)
		}
	}
}

func TestAgentSet(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	id := strings.TrimSpace(mustCLI(t, e.vars, "tenant", "create", "--name", "Initech", "--slug", "initech").stdout)

	bySlug := mustCLI(t, e.vars, "agent", "set", "--tenant", "initech", "--name", "Mara", "--role", "Support", "--persona", "Warm.").stdout
	byID := mustCLI(t, e.vars, "agent", "set", "--tenant", id, "--name", "Milo", "--role", "Sales", "--persona", "Brisk.",
		"--model", "m2", "--instructions", "Sell.").stdout
	if !uuidLine.MatchString(bySlug) || !uuidLine.MatchString(byID) {
		t.Errorf("agent set printed %q and %q, want an id each", bySlug, byID)
	}
	st := testenv.OpenStore(t, e.pg.RuntimeURL, nil)
	ag, err := st.ActiveAgent(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if ag.Name != "Milo" || ag.Role != "Sales" || ag.Persona != "Brisk." || ag.Model != "m2" || ag.Instructions != "Sell." {
		t.Errorf("active agent after the second set = %+v", ag)
	}

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"no flags", []string{"agent", "set"}, []string{"--tenant", "--name", "--role", "--persona", "required"}},
		{"no persona", []string{"agent", "set", "--tenant", "initech", "--name", "M", "--role", "R"}, []string{"--persona", "required"}},
		{"unknown tenant", []string{"agent", "set", "--tenant", "nope", "--name", "M", "--role", "R", "--persona", "P"}, []string{`"nope"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failCLI(t, e.vars, tc.want, tc.args...)
		})
	}
}

func TestWorkspaceAddListRemove(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	mustCLI(t, e.vars, "tenant", "create", "--name", "Umbrella", "--slug", "umb")
	ws := e.sim.AddWorkspace(slacksim.WorkspaceSpec{})
	stored := func() int { return adminCount(t, e.pg.AdminURL, `SELECT count(*) FROM workspaces`) }

	// Refused tokens: a clear line, nothing stored, no token in sight.
	for _, tc := range []struct {
		name     string
		app, bot string
		want     []string
	}{
		{"unknown bot token", ws.AppToken, "xoxb-999-unknown-token", []string{"bot token"}},
		{"revoked-looking app token", "xapp-1-A0BAD-000-deadbeef", ws.BotToken, []string{"app token"}},
		{"app token in the bot slot", ws.BotToken, ws.AppToken, []string{"xoxb-"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failCLI(t, e.vars, tc.want, "workspace", "add", "--tenant", "umb", "--app-token", tc.app, "--bot-token", tc.bot)
			if n := stored(); n != 0 {
				t.Errorf("%d workspaces stored after a refused token", n)
			}
		})
	}
	if r := cli(t, e.vars, "workspace", "add", "--tenant", "nobody", "--app-token", ws.AppToken, "--bot-token", ws.BotToken); r.err == nil || !strings.Contains(r.line(), `"nobody"`) {
		t.Errorf("unknown tenant: %v", r.line())
	}

	out := mustCLI(t, e.vars, "workspace", "add", "--tenant", "umb", "--app-token", ws.AppToken, "--bot-token", ws.BotToken).stdout
	if out != ws.TeamID+"\n" {
		t.Fatalf("workspace add printed %q, want the team id %s alone", out, ws.TeamID)
	}
	// The tokens are stored sealed: no plaintext, not even the prefix.
	rows := adminQuery(t, e.pg.AdminURL, `SELECT app_token_enc, bot_token_enc, key_id, bot_user_id FROM workspaces WHERE team_id = $1`, ws.TeamID)
	type raw struct {
		App, Bot  []byte
		KeyID     string
		BotUserID string
	}
	got, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[raw])
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{got.App, got.Bot} {
		if len(b) == 0 || bytes.Contains(b, []byte(ws.AppToken)) || bytes.Contains(b, []byte(ws.BotToken)) ||
			bytes.Contains(b, []byte("xoxb-")) || bytes.Contains(b, []byte("xapp-")) {
			t.Errorf("stored token is not sealed: %q", b)
		}
	}
	if got.KeyID == "" || got.BotUserID != ws.BotUserID {
		t.Errorf("stored key id %q, bot user %q (want %s)", got.KeyID, got.BotUserID, ws.BotUserID)
	}

	list := mustCLI(t, e.vars, "workspace", "list").stdout
	if !strings.Contains(list, ws.TeamID) || !strings.Contains(list, "active") {
		t.Errorf("workspace list:\n%s", list)
	}
	if strings.Contains(list, "xoxb") || strings.Contains(list, "xapp") {
		t.Errorf("workspace list shows tokens:\n%s", list)
	}

	r := mustCLI(t, e.vars, "workspace", "remove", ws.TeamID)
	if r.stdout != "" {
		t.Errorf("workspace remove printed %q on stdout", r.stdout)
	}
	if !strings.Contains(mustCLI(t, e.vars, "workspace", "list").stdout, "removed") {
		t.Error("workspace list does not show the workspace removed")
	}
	if n := adminCount(t, e.pg.AdminURL, `SELECT count(*) FROM workspaces WHERE app_token_enc IS NOT NULL OR bot_token_enc IS NOT NULL`); n != 0 {
		t.Errorf("removed workspace keeps its tokens")
	}
	if r := cli(t, e.vars, "workspace", "remove", "T0NOPE"); r.err == nil || !strings.Contains(r.line(), "T0NOPE") {
		t.Errorf("remove of an unknown team: %q", r.line())
	}
	if r := cli(t, e.vars, "workspace", "remove"); r.err == nil || !strings.Contains(r.line(), "TEAM_ID") {
		t.Errorf("remove without a team: %q", r.line())
	}

	// The tokens may come from SLACK_APP_TOKEN / SLACK_BOT_TOKEN instead of flags.
	ws2 := e.sim.AddWorkspace(slacksim.WorkspaceSpec{})
	out = mustCLI(t, e.with("SLACK_APP_TOKEN", ws2.AppToken, "SLACK_BOT_TOKEN", ws2.BotToken), "workspace", "add", "--tenant", "umb").stdout
	if out != ws2.TeamID+"\n" {
		t.Errorf("workspace add from the environment printed %q", out)
	}
}

// TestConfigErrors: a bad or missing value fails with one line naming the
// key and its environment variable; env works for keys absent from the file.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	dir := t.TempDir()
	file := filepath.Join(dir, "konstruct.yaml")
	// The file names only keys the environment does not set.
	if err := os.WriteFile(file, []byte("ratelimit:\n  per_minute: 10\nhttp:\n  addr: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fileEnv := map[string]string{"KONSTRUCT_CONFIG": file, "KONSTRUCT_DATABASE_URL": e.pg.RuntimeURL}
	mustCLI(t, fileEnv, "tenant", "create", "--name", "From Env")
	mustCLI(t, map[string]string{"KONSTRUCT_DATABASE_URL": e.pg.RuntimeURL}, "--config", file, "tenant", "list")

	for _, tc := range []struct {
		name string
		vars map[string]string
		args []string
		want []string
	}{
		{"no database", map[string]string{}, []string{"tenant", "create", "--name", "X"}, []string{"database.url", "KONSTRUCT_DATABASE_URL"}},
		{"no name and no database", map[string]string{}, []string{"tenant", "create"}, []string{"--name", "database.url", "KONSTRUCT_DATABASE_URL"}},
		{"no database for list", map[string]string{}, []string{"tenant", "list"}, []string{"database.url", "KONSTRUCT_DATABASE_URL"}},
		{"no model for run", e.with("KONSTRUCT_LLM_MODEL", ""), []string{"run"}, []string{"llm.model", "KONSTRUCT_LLM_MODEL"}},
		{"no secret for run", e.with("KONSTRUCT_SECRET_KEY", ""), []string{"run"}, []string{"secret_key", "KONSTRUCT_SECRET_KEY"}},
		{"short secret", e.with("KONSTRUCT_SECRET_KEY", "c2hvcnQ="), []string{"run"}, []string{"secret_key"}},
		{"bad duration", e.with("KONSTRUCT_THREADS_ENGAGED_TTL", "soon"), []string{"run"}, []string{"threads.engaged_ttl", "KONSTRUCT_THREADS_ENGAGED_TTL", `"soon"`}},
		{"bad number", e.with("KONSTRUCT_SLACK_CONNECTIONS_PER_WORKSPACE", "many"), []string{"gateway"}, []string{"slack.connections_per_workspace", "KONSTRUCT_SLACK_CONNECTIONS_PER_WORKSPACE"}},
		{"connections out of range", e.with("KONSTRUCT_SLACK_CONNECTIONS_PER_WORKSPACE", "11"), []string{"gateway"}, []string{"slack.connections_per_workspace", "1 and 10"}},
		{"bad redis url", e.with("KONSTRUCT_REDIS_URL", "http://x"), []string{"worker"}, []string{"redis.url", "KONSTRUCT_REDIS_URL"}},
		{"bad database url", map[string]string{"KONSTRUCT_DATABASE_URL": "mysql://x/y"}, []string{"tenant", "list"}, []string{"database.url", "postgres://"}},
		{"missing config file", map[string]string{"KONSTRUCT_CONFIG": filepath.Join(dir, "nope.yaml")}, []string{"tenant", "list"}, []string{"nope.yaml", "not found"}},
		{"unknown command", map[string]string{}, []string{"frobnicate"}, []string{"frobnicate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failCLI(t, tc.vars, tc.want, tc.args...)
		})
	}
}

func TestErrorLine(t *testing.T) {
	t.Parallel()
	refused := &konstruct.Error{Code: konstruct.EUNAUTHORIZED, Message: "Slack refused the token (invalid_auth) in auth.test", Err: errors.New("invalid_auth")}
	down := &konstruct.Error{Code: konstruct.EUNAVAILABLE, Message: "PostgreSQL does not answer.", Err: errors.New("dial tcp: connection refused")}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"context kept, code and cause dropped", fmt.Errorf("workspace add: bot token: %w", refused), "workspace add: bot token: Slack refused the token (invalid_auth) in auth.test"},
		{"cause kept for an outage", fmt.Errorf("tenant list: %w", down), "tenant list: PostgreSQL does not answer: dial tcp: connection refused"},
		{"joined", errors.Join(errors.New("a: --name is required"), errors.New("config: b")), "a: --name is required; config: b"},
		{"multi-line", errors.New("connect:\n\t127.0.0.1:1: refused\n\t127.0.0.1:2: refused"), "connect: 127.0.0.1:1: refused; 127.0.0.1:2: refused"},
		{"token", fmt.Errorf("post with xoxb-123-456-abcdef and xapp-1-A1-2-ff: %w", refused), "post with xoxb-[REDACTED] and xapp-[REDACTED]: Slack refused the token (invalid_auth) in auth.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := errorLine(tc.err); got != tc.want {
				t.Errorf("errorLine = %q\nwant         %q", got, tc.want)
			}
		})
	}
}

// failCLI runs the command line, which must fail with an error line saying
// each of want; it returns the result for further checks.
func failCLI(t *testing.T, vars map[string]string, want []string, args ...string) result {
	t.Helper()
	r := cli(t, vars, args...)
	if r.err == nil {
		t.Fatalf("succeeded: %q", r.stdout)
	}
	t.Logf("konstruct: %s", r.line())
	for _, w := range want {
		if !strings.Contains(r.line(), w) {
			t.Errorf("error %q does not say %q", r.line(), w)
		}
	}
	return r
}
