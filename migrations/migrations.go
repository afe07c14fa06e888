// Package migrations holds Konstruct's SQL schema as goose migrations
// embedded in the binary, and applies them: `konstruct migrate` calls Up with
// the owner role (database.migrate_url), which then grants the runtime role
// (the user of database.url) exactly what the daemon needs.
//
// Up is safe to run twice (a no-op the second time) and concurrently: goose
// holds a Postgres advisory session lock while it migrates, and the grants
// run in one transaction under an advisory transaction lock.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// FS holds the migrations, NNNN_name.sql, at its root.
//
//go:embed *.sql
var FS embed.FS

// grantLockID serializes the grant step of concurrent Up calls (concurrent
// GRANTs on one object can fail with "tuple concurrently updated").
// Advisory locks are per database, so distinct databases never contend.
const grantLockID = 0x6b6f6e7374 // "konst"

// Up applies every pending migration as the owner role of migrateURL, then
// grants the runtime role, the user named in runtimeURL, what the daemon
// needs. When both URLs name the same user, no grant is made (and the
// daemon will refuse to run as the owner: see store.CheckRole).
func Up(ctx context.Context, migrateURL, runtimeURL string, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if migrateURL == "" {
		migrateURL = runtimeURL
	}
	cfg, err := pgx.ParseConfig(migrateURL)
	if err != nil {
		return fmt.Errorf("database.migrate_url: %w", err)
	}
	runtimeRole := ""
	if runtimeURL != "" {
		rcfg, err := pgx.ParseConfig(runtimeURL)
		if err != nil {
			return fmt.Errorf("database.url: %w", err)
		}
		runtimeRole = rcfg.User
	}

	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("connect as the owner (database.migrate_url): %w", err)
	}
	var owner string
	if err := db.QueryRowContext(ctx, "SELECT current_user").Scan(&owner); err != nil {
		return fmt.Errorf("owner role: %w", err)
	}
	if runtimeRole == owner {
		runtimeRole = ""
		logger.Warn("database.url and database.migrate_url use the same role; no runtime grants made, and the daemon will refuse to run as the owner",
			"role", owner)
	}
	if runtimeRole != "" {
		// Fail before touching the schema if the grants cannot succeed.
		var exists bool
		if err := db.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", runtimeRole).Scan(&exists); err != nil {
			return fmt.Errorf("look up the runtime role: %w", err)
		}
		if !exists {
			return fmt.Errorf("runtime role %q (the user of database.url) does not exist: create it first, e.g. CREATE ROLE %s LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '…'",
				runtimeRole, pgx.Identifier{runtimeRole}.Sanitize())
		}
	}

	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 600), lock.WithUnlockTimeout(1, 60))
	if err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, FS,
		goose.WithSessionLocker(locker),
		goose.WithSlog(logger),
		goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	start := time.Now()
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	if len(results) > 0 {
		v, _ := p.GetDBVersion(ctx)
		logger.Info("migrations applied", "count", len(results), "version", v, "duration", time.Since(start))
	}

	if runtimeRole != "" {
		if err := grant(ctx, db, runtimeRole); err != nil {
			return fmt.Errorf("grant the runtime role %q: %w", runtimeRole, err)
		}
	}
	return nil
}

// Privileges of the runtime role: exactly these, nothing more. Keep them in
// step with the store: a table it does not write gets SELECT only, or nothing.
var (
	tableGrants = map[string]string{
		"tenants":          "SELECT, INSERT",
		"agents":           "SELECT, INSERT, UPDATE",
		"workspaces":       "SELECT, INSERT, UPDATE",
		"replies":          "SELECT, INSERT, UPDATE",
		"policies":         "SELECT, INSERT, UPDATE",
		"feedback":         "SELECT, INSERT, UPDATE",
		"goose_db_version": "SELECT", // `konstruct doctor` compares versions
	}
	definerFunctions = []string{
		"konstruct_active_workspaces()",
		"konstruct_workspace_for_team(text)",
		"konstruct_tenant(text)",
		"konstruct_tenants()",
		"konstruct_workspaces()",
	}
)

// grant converges the runtime role's privileges to exactly the lists above:
// it revokes everything on the schema's tables and functions, then grants,
// in one transaction, so a running daemon never sees a gap.
func grant(ctx context.Context, db *sql.DB, role string) error {
	r := pgx.Identifier{role}.Sanitize()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var dbName string
	if err := tx.QueryRowContext(ctx, "SELECT current_database()").Scan(&dbName); err != nil {
		return err
	}
	stmts := []string{
		fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", grantLockID),
		"GRANT CONNECT ON DATABASE " + pgx.Identifier{dbName}.Sanitize() + " TO " + r,
		"GRANT USAGE ON SCHEMA public TO " + r,
		"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM " + r,
		"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM " + r,
		"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM " + r,
	}
	for table, privs := range tableGrants {
		stmts = append(stmts, fmt.Sprintf("GRANT %s ON TABLE public.%s TO %s", privs, table, r))
	}
	for _, fn := range definerFunctions {
		stmts = append(stmts, fmt.Sprintf("GRANT EXECUTE ON FUNCTION public.%s TO %s", fn, r))
	}
	for _, s := range stmts {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", strings.SplitN(s, " TO ", 2)[0], err)
		}
	}
	return tx.Commit()
}

// Latest is the version of the newest embedded migration.
func Latest() int64 {
	var latest int64
	entries, err := fs.ReadDir(FS, ".")
	if err != nil {
		return 0
	}
	for _, e := range entries {
		name := e.Name()
		if path.Ext(name) != ".sql" {
			continue
		}
		num, _, _ := strings.Cut(name, "_")
		if v, err := strconv.ParseInt(num, 10, 64); err == nil && v > latest {
			latest = v
		}
	}
	return latest
}
