// Package store is Konstruct's Postgres data layer (pgx): tenants, their
// agents, policies and budgets, Slack workspaces with encrypted tokens,
// replies and the feedback on them, and the usage figures made of those.
//
// Every tenant-scoped read or write runs in a transaction that first sets
// app.current_tenant with set_config(…, true), i.e. for that transaction
// only (InTenant); Row-Level Security then confines it to that tenant. The
// few cross-tenant reads (the gateway's active workspaces, team → tenant, the
// admin CLI's lists and tenant lookup) call the SECURITY DEFINER functions
// the migrations define; nothing else crosses tenants. The daemon's role
// must be neither superuser, BYPASSRLS nor the tables' owner (CheckRole).
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/migrations"
	"github.com/konstruct/konstruct/secret"
)

// Store is the pgx pool plus the secret box that seals Slack tokens.
type Store struct {
	pool   *pgxpool.Pool
	box    *secret.Box
	logger *slog.Logger
}

// Open connects to url (the runtime role) and checks the connection. box
// may be nil for commands that never touch tokens; those that do then fail
// with a clear error.
func Open(ctx context.Context, url string, box *secret.Box, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, konstruct.Errorf(konstruct.EINVALID, "database.url: %s", konstruct.Redact(err.Error()))
	}
	tuneForFailover(cfg)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, &konstruct.Error{Code: konstruct.EUNAVAILABLE, Message: "cannot connect to PostgreSQL at database.url", Err: err}
	}
	return &Store{pool: pool, box: box, logger: logger}, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Pool is the underlying pool, for tests and health checks.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks that Postgres answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return &konstruct.Error{Code: konstruct.EUNAVAILABLE, Message: "PostgreSQL does not answer", Err: err}
	}
	return nil
}

// CheckRole refuses a role that Row-Level Security would not confine: a
// superuser, a BYPASSRLS role, the owner of the tables (which could turn
// RLS off and reads every row through the owner's policy), or a member of
// any of those. Membership counts whether it is direct or through other
// roles, and whatever its INHERIT: a NOINHERIT member does not use the
// role's attributes by itself, but may SET ROLE to it at any time.
func (s *Store) CheckRole(ctx context.Context) error {
	var (
		role                   string
		super, bypass, isOwner bool
		via                    []string // roles it is a member of that RLS does not confine
		grants                 []string // its direct memberships that lead to one of those
	)
	err := s.pool.QueryRow(ctx, `
		SELECT r.rolname, r.rolsuper, r.rolbypassrls,
		       EXISTS (SELECT 1 FROM pg_class c
		               JOIN pg_namespace n ON n.oid = c.relnamespace
		               WHERE n.nspname = 'public'
		                 AND c.relname IN ('tenants', 'agents', 'workspaces', 'replies', 'policies', 'feedback')
		                 AND pg_has_role(r.oid, c.relowner, 'MEMBER')),
		       ARRAY(SELECT a.rolname FROM pg_roles a
		             WHERE a.oid <> r.oid AND (a.rolsuper OR a.rolbypassrls)
		               AND pg_has_role(r.oid, a.oid, 'MEMBER')
		             ORDER BY a.rolname),
		       ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
		             WHERE m.member = r.oid AND EXISTS (
		                 SELECT 1 FROM pg_roles a
		                 WHERE (a.rolsuper OR a.rolbypassrls) AND pg_has_role(g.oid, a.oid, 'MEMBER'))
		             ORDER BY g.rolname)
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(&role, &super, &bypass, &isOwner, &via, &grants)
	if err != nil {
		return fmt.Errorf("check database role: %w", err)
	}
	q := ident(role)
	switch {
	case super:
		return konstruct.Errorf(konstruct.EINVALID,
			"database.url connects as %s, a superuser: Row-Level Security does not apply to it, so tenants would not be isolated. "+
				"Use a dedicated role (CREATE ROLE konstruct_app LOGIN NOSUPERUSER NOBYPASSRLS) and run `konstruct migrate` to grant it, "+
				"or ALTER ROLE %s NOSUPERUSER NOBYPASSRLS", q, q)
	case bypass:
		return konstruct.Errorf(konstruct.EINVALID,
			"database.url connects as %s, which has BYPASSRLS: Row-Level Security does not apply to it, so tenants would not be isolated. "+
				"Run ALTER ROLE %s NOBYPASSRLS, or use a dedicated role (CREATE ROLE konstruct_app LOGIN NOSUPERUSER NOBYPASSRLS)", q, q)
	case len(via) > 0:
		idents := func(names []string) string {
			out := make([]string, len(names))
			for i, n := range names {
				out[i] = ident(n)
			}
			return strings.Join(out, ", ")
		}
		return konstruct.Errorf(konstruct.EINVALID,
			"database.url connects as %s, a member of %s, which is superuser or BYPASSRLS: %s can SET ROLE to it (INHERIT or not) "+
				"and step outside Row-Level Security, so tenants would not be isolated. Revoke the membership (REVOKE %s FROM %s) "+
				"or use a dedicated role that belongs to no such role", q, idents(via), q, idents(grants), q)
	case isOwner:
		return konstruct.Errorf(konstruct.EINVALID,
			"database.url connects as %s, which owns the Konstruct tables (or is a member of their owner) and could switch Row-Level Security off. "+
				"Keep the owner for database.migrate_url and run the daemon as a dedicated role (CREATE ROLE konstruct_app LOGIN NOSUPERUSER NOBYPASSRLS), "+
				"then run `konstruct migrate` to grant it", q)
	}
	return nil
}

// MigrationsCurrent returns the database's schema version and the newest
// version this binary embeds. A never-migrated database is at version 0.
func (s *Store) MigrationsCurrent(ctx context.Context) (current, latest int64, err error) {
	latest = migrations.Latest()
	err = s.pool.QueryRow(ctx, `SELECT COALESCE(max(version_id), 0) FROM goose_db_version WHERE is_applied`).Scan(&current)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return 0, latest, nil
	}
	if err != nil {
		return 0, latest, fmt.Errorf("schema version: %w", err)
	}
	return current, latest, nil
}

var plainIdent = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// ident quotes a role name for a message a person may paste, only when
// it needs quoting.
func ident(name string) string {
	if plainIdent.MatchString(name) {
		return name
	}
	return pgx.Identifier{name}.Sanitize()
}

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// InTenant runs fn in a transaction confined to tenantID by Row-Level
// Security: the tenant is set with set_config(…, true), so it ends with the
// transaction and never leaks to the next user of the connection. fn's
// error rolls the transaction back.
func (s *Store) InTenant(ctx context.Context, tenantID string, fn func(pgx.Tx) error) error {
	if !uuidPattern.MatchString(tenantID) {
		return konstruct.Errorf(konstruct.EINVALID, "tenant id %q is not a UUID", tenantID)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.current_tenant', $1, true)`, tenantID); err != nil {
			return fmt.Errorf("set tenant: %w", err)
		}
		return fn(tx)
	})
}

// Postgres error codes the store maps to konstruct codes.
const (
	pgUniqueViolation = "23505"
	pgCheckViolation  = "23514"
	pgForeignKey      = "23503"
	pgInsufficient    = "42501" // includes "new row violates row-level security policy"
)

func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// wrap maps no-rows and constraint violations to konstruct errors with
// what for a message, and wraps the rest with the noun phrase what.
func wrap(err error, what string) error {
	if err == nil {
		return nil
	}
	var kerr *konstruct.Error
	if errors.As(err, &kerr) {
		return err
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return &konstruct.Error{Code: konstruct.ENOTFOUND, Message: what + " not found", Err: err}
	case pgCode(err) == pgUniqueViolation:
		return &konstruct.Error{Code: konstruct.ECONFLICT, Message: what + " already exists", Err: err}
	case pgCode(err) == pgCheckViolation, pgCode(err) == pgForeignKey:
		return &konstruct.Error{Code: konstruct.EINVALID, Message: what + ": invalid value", Err: err}
	}
	return fmt.Errorf("%s: %w", what, err)
}
