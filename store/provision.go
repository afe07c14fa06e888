package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Database is a private database with its own owner and runtime roles, made
// by Provision for tests and the demo.
type Database struct {
	Name        string
	OwnerRole   string
	RuntimeRole string
	// AdminURL connects to this database as the administrator that made it.
	AdminURL string
	// OwnerURL is for migrations (database.migrate_url).
	OwnerURL string
	// RuntimeURL is for the daemon (database.url): NOSUPERUSER NOBYPASSRLS.
	RuntimeURL string

	adminURL string // the administrator's original URL, for Drop
}

var namePattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,50}$`)

// Provision creates database name, owned by a new role name_owner
// (NOSUPERUSER), and a runtime role name_app (NOSUPERUSER NOBYPASSRLS), both
// with random passwords, as the administrator of adminURL (which must be
// allowed to create roles and databases). It does not migrate. Drop removes
// all three.
func Provision(ctx context.Context, adminURL, name string) (*Database, error) {
	if !namePattern.MatchString(name) {
		return nil, fmt.Errorf("provision: database name %q: use lower-case letters, digits and _ (at most 51)", name)
	}
	u, err := url.Parse(adminURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, errors.New("provision: the admin URL must be postgres://user@host:port/db")
	}
	d := &Database{Name: name, OwnerRole: name + "_owner", RuntimeRole: name + "_app", adminURL: adminURL}
	ownerPW, appPW := randomHex(16), randomHex(16)
	d.AdminURL = withUser(u, nil, name)
	d.OwnerURL = withUser(u, url.UserPassword(d.OwnerRole, ownerPW), name)
	d.RuntimeURL = withUser(u, url.UserPassword(d.RuntimeRole, appPW), name)

	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("provision: connect as administrator: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	owner, app, db := pgx.Identifier{d.OwnerRole}.Sanitize(), pgx.Identifier{d.RuntimeRole}.Sanitize(), pgx.Identifier{name}.Sanitize()
	stmts := []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD '%s'", owner, ownerPW),
		fmt.Sprintf("CREATE ROLE %s LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD '%s'", app, appPW),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", db, owner),
		fmt.Sprintf("REVOKE ALL ON DATABASE %s FROM PUBLIC", db),
		fmt.Sprintf("GRANT CONNECT ON DATABASE %s TO %s", db, app),
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			_ = d.Drop(context.WithoutCancel(ctx))
			stmt, _, _ := strings.Cut(s, " PASSWORD")
			return nil, fmt.Errorf("provision: %s: %w", stmt, err)
		}
	}
	return d, nil
}

// Drop removes the database (disconnecting its sessions) and both roles.
// It is safe to call on a partly provisioned Database.
func (d *Database) Drop(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, d.adminURL)
	if err != nil {
		return fmt.Errorf("drop %s: connect as administrator: %w", d.Name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var errs []error
	for _, s := range []string{
		fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", pgx.Identifier{d.Name}.Sanitize()),
		fmt.Sprintf("DROP ROLE IF EXISTS %s", pgx.Identifier{d.RuntimeRole}.Sanitize()),
		fmt.Sprintf("DROP ROLE IF EXISTS %s", pgx.Identifier{d.OwnerRole}.Sanitize()),
	} {
		if _, err := conn.Exec(ctx, s); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
		}
	}
	return errors.Join(errs...)
}

func withUser(u *url.URL, user *url.Userinfo, db string) string {
	c := *u
	if user != nil {
		c.User = user
	}
	c.Path = "/" + db
	return c.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
