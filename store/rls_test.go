package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/secret"
	"github.com/konstruct/konstruct/store"
)

var tenantTables = []string{"tenants", "agents", "workspaces", "replies", "policies", "feedback"}

// fixture is one tenant with an agent, a workspace and a reply.
type fixture struct {
	tenant    konstruct.Tenant
	workspace konstruct.Workspace
}

func seed(t *testing.T, st *store.Store, slug string) fixture {
	t.Helper()
	ctx := context.Background()
	ten, err := st.CreateTenant(ctx, "Tenant "+slug, slug)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetAgent(ctx, konstruct.Agent{TenantID: ten.ID, Name: "Mara " + slug, Role: "Support", Persona: "kind"}); err != nil {
		t.Fatal(err)
	}
	w, err := st.AddWorkspace(ctx, konstruct.Workspace{
		TenantID: ten.ID, TeamID: "T" + strings.ToUpper(slug), BotUserID: "U" + slug,
		AppToken: "xapp-1-" + slug + "-secret", BotToken: "xoxb-1-" + slug + "-secret",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.RecordReply(ctx, konstruct.Reply{TenantID: ten.ID, WorkspaceID: w.ID, TeamID: w.TeamID, EventID: "Ev" + slug, Outcome: konstruct.OutcomeAnswered}); err != nil {
		t.Fatal(err)
	}
	dms := false
	if _, err := st.SetPolicy(ctx, ten.ID, konstruct.PolicyPatch{DMs: &dms}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.RecordVote(ctx, konstruct.Vote{Post: konstruct.Post{TenantID: ten.ID, TeamID: w.TeamID, ChannelID: "C1", TS: "1.0"}, User: "U1", Up: true}); err != nil {
		t.Fatal(err)
	}
	return fixture{tenant: ten, workspace: w}
}

func count(t *testing.T, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, table string) int {
	t.Helper()
	var n int
	if err := q.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

func TestRLSIsolation(t *testing.T) {
	t.Parallel()
	st, _ := testenv.NewStore(t)
	ctx := context.Background()
	a, b := seed(t, st, "alpha"), seed(t, st, "beta")

	for _, tc := range []struct {
		name       string
		self, peer fixture
	}{{"a", a, b}, {"b", b, a}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := st.InTenant(ctx, tc.self.tenant.ID, func(tx pgx.Tx) error {
				for _, table := range tenantTables {
					if n := count(t, tx, table); n != 1 {
						t.Errorf("%s: tenant sees %d rows, want its own 1", table, n)
					}
				}
				var slug string
				if err := tx.QueryRow(ctx, "SELECT slug FROM tenants").Scan(&slug); err != nil || slug != tc.self.tenant.Slug {
					t.Errorf("tenants: got %q, %v", slug, err)
				}
				// Updates and deletes of the other tenant's rows touch nothing.
				tag, err := tx.Exec(ctx, "UPDATE agents SET name = 'pwned' WHERE tenant_id = $1", tc.peer.tenant.ID)
				if err != nil || tag.RowsAffected() != 0 {
					t.Errorf("update peer agent: %v rows, %v", tag.RowsAffected(), err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// Writing a row for another tenant fails WITH CHECK (42501).
			inserts := map[string]string{
				"agents":     "INSERT INTO agents (tenant_id, name, active) VALUES ($1, 'x', false)",
				"workspaces": "INSERT INTO workspaces (tenant_id, team_id, status) VALUES ($1, 'TX" + tc.name + "', 'removed')",
				"replies":    "INSERT INTO replies (tenant_id, event_id) VALUES ($1, 'Evx')",
				"tenants":    "INSERT INTO tenants (id, slug, name) VALUES ($1, 'x" + tc.name + "', 'x')",
				"policies":   "INSERT INTO policies (tenant_id) VALUES ($1)",
				"feedback":   "INSERT INTO feedback (tenant_id, team_id, channel_id, post_ts, user_id, vote) VALUES ($1, 'T', 'C', '1.0', 'U', 'up')",
			}
			for table, q := range inserts {
				arg := tc.peer.tenant.ID
				if table == "tenants" {
					arg = "00000000-0000-4000-8000-000000000001"
				}
				err := st.InTenant(ctx, tc.self.tenant.ID, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, q, arg)
					return err
				})
				if sqlState(err) != "42501" {
					t.Errorf("%s: cross-tenant insert: err = %v, want SQLSTATE 42501", table, err)
				}
			}
			// Moving one's own row to the other tenant fails too.
			err = st.InTenant(ctx, tc.self.tenant.ID, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "UPDATE workspaces SET tenant_id = $1", tc.peer.tenant.ID)
				return err
			})
			if sqlState(err) != "42501" {
				t.Errorf("re-home workspace: err = %v, want 42501", err)
			}
		})
	}

	t.Run("no tenant set", func(t *testing.T) {
		t.Parallel()
		for _, table := range tenantTables {
			if n := count(t, st.Pool(), table); n != 0 {
				t.Errorf("%s: %d rows without a tenant, want 0", table, n)
			}
		}
		_, err := st.Pool().Exec(ctx, "INSERT INTO replies (tenant_id, event_id) VALUES ($1, 'Evz')", a.tenant.ID)
		if sqlState(err) != "42501" {
			t.Errorf("insert without tenant: err = %v, want 42501", err)
		}
	})
}

// With one connection, the tenant of one transaction must not be visible
// to the next user of that connection.
func TestRLSNoLeakBetweenTransactions(t *testing.T) {
	t.Parallel()
	seedStore, pg := testenv.NewStore(t)
	a := seed(t, seedStore, "alpha")
	ctx := context.Background()

	cfg, err := pgxpool.ParseConfig(pg.RuntimeURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var pid1, pid2 int
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('app.current_tenant', $1, true)", a.tenant.ID); err != nil {
			return err
		}
		if n := count(t, tx, "agents"); n != 1 {
			t.Errorf("inside: %d agents", n)
		}
		return tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid1)
	})
	if err != nil {
		t.Fatal(err)
	}
	var setting string
	if err := pool.QueryRow(ctx, "SELECT pg_backend_pid(), COALESCE(current_setting('app.current_tenant', true), '')").Scan(&pid2, &setting); err != nil {
		t.Fatal(err)
	}
	if pid1 != pid2 {
		t.Fatalf("not the same connection: %d vs %d", pid1, pid2)
	}
	if setting != "" {
		t.Errorf("app.current_tenant leaked: %q", setting)
	}
	for _, table := range tenantTables {
		if n := count(t, pool, table); n != 0 {
			t.Errorf("%s: %d rows after the tenant's transaction, want 0", table, n)
		}
	}
}

func TestRLSCatalog(t *testing.T) {
	t.Parallel()
	st, pg := testenv.NewStore(t)
	ctx := context.Background()
	admin := openPool(t, pg.AdminURL)

	rows, err := admin.Query(ctx, `
		SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
		       EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation'
		               AND p.polqual IS NOT NULL AND p.polwithcheck IS NOT NULL
		               AND pg_get_expr(p.polqual, p.polrelid) LIKE '%current_setting(''app.current_tenant''::text, true)%')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind = 'r'
		  AND (c.relname = 'tenants' OR EXISTS (SELECT 1 FROM pg_attribute a
		       WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped))
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for rows.Next() {
		var name string
		var rls, force, policy bool
		if err := rows.Scan(&name, &rls, &force, &policy); err != nil {
			t.Fatal(err)
		}
		seen++
		if !rls || !force || !policy {
			t.Errorf("%s: relrowsecurity=%v relforcerowsecurity=%v tenant policy=%v", name, rls, force, policy)
		}
	}
	if rows.Err() != nil || seen != len(tenantTables) {
		t.Fatalf("checked %d tables (%v), want %d", seen, rows.Err(), len(tenantTables))
	}

	// The runtime role: not owner, superuser nor BYPASSRLS.
	var super, bypass, owns bool
	err = admin.QueryRow(ctx, `
		SELECT r.rolsuper, r.rolbypassrls,
		       EXISTS (SELECT 1 FROM pg_class c WHERE c.relowner = r.oid)
		FROM pg_roles r WHERE r.rolname = $1`, pg.RuntimeRole).Scan(&super, &bypass, &owns)
	if err != nil || super || bypass || owns {
		t.Errorf("runtime role: super=%v bypassrls=%v owns tables=%v err=%v", super, bypass, owns, err)
	}
	if err := st.CheckRole(ctx); err != nil {
		t.Errorf("CheckRole(runtime) = %v", err)
	}

	// Definer functions: owned by the owner, pinned search_path, EXECUTE
	// for the runtime role only.
	rows, err = admin.Query(ctx, `
		SELECT p.proname, p.prosecdef, pg_get_userbyid(p.proowner),
		       COALESCE(array_to_string(p.proconfig, ','), ''),
		       has_function_privilege($1, p.oid, 'EXECUTE'),
		       COALESCE((SELECT bool_or(a.grantee = 0) FROM aclexplode(p.proacl) a), true)
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'public' AND p.proname LIKE 'konstruct\_%' AND p.prorettype <> 'trigger'::regtype`, pg.RuntimeRole)
	if err != nil {
		t.Fatal(err)
	}
	fns := 0
	for rows.Next() {
		var name, owner, config string
		var definer, runtimeExec, public bool
		if err := rows.Scan(&name, &definer, &owner, &config, &runtimeExec, &public); err != nil {
			t.Fatal(err)
		}
		fns++
		if !definer || owner != pg.OwnerRole || config != "search_path=pg_catalog, public" || !runtimeExec || public {
			t.Errorf("%s: definer=%v owner=%s config=%q runtime exec=%v public exec=%v", name, definer, owner, config, runtimeExec, public)
		}
	}
	if fns != 5 {
		t.Errorf("%d definer functions, want 5", fns)
	}

	// Table privileges: exactly what the store uses.
	want := map[string]string{
		"tenants": "SELECT,INSERT", "agents": "SELECT,INSERT,UPDATE",
		"workspaces": "SELECT,INSERT,UPDATE", "replies": "SELECT,INSERT,UPDATE",
		"policies": "SELECT,INSERT,UPDATE", "feedback": "SELECT,INSERT,UPDATE",
		"goose_db_version": "SELECT",
	}
	for table, privs := range want {
		for _, p := range []string{"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"} {
			var has bool
			if err := admin.QueryRow(ctx, "SELECT has_table_privilege($1, $2, $3)", pg.RuntimeRole, "public."+table, p).Scan(&has); err != nil {
				t.Fatal(err)
			}
			if wantHas := strings.Contains(","+privs+",", ","+p+","); has != wantHas {
				t.Errorf("runtime %s on %s = %v, want %v", p, table, has, wantHas)
			}
		}
	}
}

func TestRuntimeRoleCannotEscape(t *testing.T) {
	t.Parallel()
	st, pg := testenv.NewStore(t)
	a, _ := seed(t, st, "alpha"), seed(t, st, "beta")
	ctx := context.Background()
	for _, q := range []string{
		"ALTER TABLE agents DISABLE ROW LEVEL SECURITY",
		"ALTER TABLE agents NO FORCE ROW LEVEL SECURITY",
		"DROP POLICY tenant_isolation ON workspaces",
		"CREATE POLICY open ON replies USING (true)",
		"ALTER FUNCTION konstruct_tenants() SECURITY INVOKER",
		"CREATE TABLE sneaky (id int)",
		"DELETE FROM workspaces",
		"TRUNCATE replies",
		"SET ROLE " + pg.OwnerRole,
		"SET row_security = off; SELECT * FROM agents",
	} {
		_, err := st.Pool().Exec(ctx, q)
		if err == nil {
			t.Errorf("%q succeeded as the runtime role", q)
		} else if c := sqlState(err); c != "42501" && c != "42883" {
			t.Logf("%q: %v", q, err)
		}
	}
	// SET at session level only names one tenant, like a transaction does:
	// it scopes, it never widens.
	conn, err := st.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	defer func() { _, _ = conn.Exec(ctx, "RESET app.current_tenant") }()
	if _, err := conn.Exec(ctx, fmt.Sprintf("SET app.current_tenant = '%s'", a.tenant.ID)); err != nil {
		t.Fatal(err)
	}
	if n := count(t, conn, "workspaces"); n != 1 {
		t.Errorf("session-level tenant sees %d workspaces, want 1", n)
	}
	if _, err := conn.Exec(ctx, "SET app.current_tenant = ''"); err != nil {
		t.Fatal(err)
	}
	if n := count(t, conn, "workspaces"); n != 0 {
		t.Errorf("empty tenant sees %d workspaces, want 0", n)
	}
}

func TestCheckRole(t *testing.T) {
	t.Parallel()
	pg := testenv.NewPG(t)
	ctx := context.Background()
	admin := openPool(t, pg.AdminURL)
	bypassRole := pg.DBName + "_bypass"
	for _, q := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN NOSUPERUSER BYPASSRLS", bypassRole),
		fmt.Sprintf("GRANT CONNECT ON DATABASE %s TO %s", pg.DBName, bypassRole),
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		// Runs after the stores below are closed, before the database drop.
		ctx := context.Background()
		_, _ = admin.Exec(ctx, fmt.Sprintf("REVOKE CONNECT ON DATABASE %s FROM %s", pg.DBName, bypassRole))
		if _, err := admin.Exec(ctx, "DROP ROLE IF EXISTS "+bypassRole); err != nil {
			t.Errorf("drop role %s: %v", bypassRole, err)
		}
	})
	bypassURL := strings.Replace(pg.AdminURL, "postgres@", bypassRole+"@", 1)
	if !strings.Contains(bypassURL, bypassRole) {
		t.Skipf("cannot derive a URL for %s from %s", bypassRole, pg.AdminURL)
	}

	box, _ := secret.NewBox(testenv.SecretKey())
	for _, tc := range []struct {
		name, url string
		want      []string // in the message; "" means accepted
	}{
		{"runtime", pg.RuntimeURL, nil},
		{"superuser", pg.AdminURL, []string{"superuser", "NOSUPERUSER NOBYPASSRLS", "ALTER ROLE"}},
		{"bypassrls", bypassURL, []string{"BYPASSRLS", "ALTER ROLE " + bypassRole + " NOBYPASSRLS"}},
		{"owner", pg.OwnerURL, []string{"owns the Konstruct tables", "database.migrate_url"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := testenv.OpenStore(t, tc.url, box)
			err := st.CheckRole(ctx)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("CheckRole = %v", err)
				}
				return
			}
			if konstruct.ErrorCode(err) != konstruct.EINVALID {
				t.Fatalf("CheckRole = %v, want EINVALID", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(konstruct.ErrorMessage(err), w) {
					t.Errorf("message %q lacks %q", konstruct.ErrorMessage(err), w)
				}
			}
		})
	}
}

func openPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}
