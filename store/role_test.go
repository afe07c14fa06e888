package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/secret"
)

// A role that belongs to a superuser, BYPASSRLS or owner role can SET ROLE
// to it, INHERIT or not, directly or through another role: CheckRole
// refuses it like the role itself.
func TestCheckRoleRefusesMembers(t *testing.T) {
	t.Parallel()
	pg := testenv.NewPG(t)
	ctx := context.Background()
	admin := openPool(t, pg.AdminURL)
	p := pg.DBName
	roles := []string{p + "_noinherit", p + "_indirect", p + "_ownerkin", p + "_plain", p + "_mid", p + "_bypass", p + "_super"}
	stmts := []string{
		fmt.Sprintf("CREATE ROLE %s_super NOLOGIN SUPERUSER", p),
		fmt.Sprintf("CREATE ROLE %s_bypass NOLOGIN NOSUPERUSER BYPASSRLS", p),
		fmt.Sprintf("CREATE ROLE %s_mid NOLOGIN", p),
		fmt.Sprintf("GRANT %s_super TO %s_mid", p, p),
		// A NOINHERIT member of a BYPASSRLS role: pg_has_role(…, 'USAGE') says no.
		fmt.Sprintf("CREATE ROLE %s_noinherit LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT", p),
		fmt.Sprintf("GRANT %s_bypass TO %s_noinherit", p, p),
		// A member of a superuser through another role.
		fmt.Sprintf("CREATE ROLE %s_indirect LOGIN NOSUPERUSER NOBYPASSRLS", p),
		fmt.Sprintf("GRANT %s_mid TO %s_indirect", p, p),
		// A NOINHERIT member of the tables' owner.
		fmt.Sprintf("CREATE ROLE %s_ownerkin LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT", p),
		fmt.Sprintf("GRANT %s TO %s_ownerkin", pg.OwnerRole, p),
		// Member of nothing of the kind: accepted.
		fmt.Sprintf("CREATE ROLE %s_plain LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT", p),
		fmt.Sprintf("GRANT %s TO %s_plain", pg.RuntimeRole, p), // an unprivileged role's role is fine
	}
	t.Cleanup(func() {
		// After the stores below are closed, before the database is dropped.
		for _, r := range roles {
			_, _ = admin.Exec(context.Background(), fmt.Sprintf("REVOKE CONNECT ON DATABASE %s FROM %s", p, r))
			if _, err := admin.Exec(context.Background(), "DROP ROLE IF EXISTS "+r); err != nil {
				t.Errorf("drop role %s: %v", r, err)
			}
		}
	})
	for _, r := range roles[:4] {
		stmts = append(stmts, fmt.Sprintf("GRANT CONNECT ON DATABASE %s TO %s", p, r))
	}
	for _, q := range stmts {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	box, _ := secret.NewBox(testenv.SecretKey())
	for _, tc := range []struct {
		role string
		want []string // in the message; nil means accepted
	}{
		{p + "_noinherit", []string{"member of " + p + "_bypass", "REVOKE " + p + "_bypass FROM " + p + "_noinherit"}},
		{p + "_indirect", []string{p + "_super", "SET ROLE", "REVOKE " + p + "_mid FROM " + p + "_indirect"}},
		{p + "_ownerkin", []string{"owns the Konstruct tables (or is a member of their owner)"}},
		{p + "_plain", nil},
	} {
		t.Run(strings.TrimPrefix(tc.role, p+"_"), func(t *testing.T) {
			url := strings.Replace(pg.AdminURL, "postgres@", tc.role+"@", 1)
			if !strings.Contains(url, tc.role) {
				t.Skipf("cannot derive a URL for %s from %s", tc.role, pg.AdminURL)
			}
			st := testenv.OpenStore(t, url, box)
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
