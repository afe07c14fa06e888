package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Scratch databases are the private databases of short runs (the demo):
// Provision names them prefix+random, and a run that is killed (SIGKILL,
// a closed pipe) leaves the database and its two roles behind. A live run
// holds an advisory lock named after its database for as long as it runs,
// so a later run can tell what was left behind from what is in use, and
// reap it.

// scratchLockClass is the first key of the advisory locks (ASCII "knst").
const scratchLockClass = 0x6b6e7374

// HoldScratch takes the advisory lock of the scratch database name on its
// own connection to adminURL, and keeps it until release is called or the
// process dies. Take it before Provision: a run that reaps meanwhile sees
// the name in use. Every run must use the same database in adminURL (the
// locks of PostgreSQL are per database).
func HoldScratch(ctx context.Context, adminURL, name string) (release func(), err error) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("hold %s: connect as administrator: %w", name, err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, scratchLockClass, name).Scan(&ok); err != nil || !ok {
		_ = conn.Close(context.WithoutCancel(ctx))
		if err == nil {
			err = errors.New("another run holds it")
		}
		return nil, fmt.Errorf("hold %s: %w", name, err)
	}
	return func() { _ = conn.Close(context.Background()) }, nil
}

// ReapScratch removes what earlier runs named prefix+… left behind and no
// live run holds: for each such name (found among the databases and roles,
// plus the names in also, e.g. found only in Redis) it calls clean (nil:
// nothing) while it holds the name, then drops the database and its roles.
// It returns the names removed and the names left because a run holds
// them; an error stops at the first name that could not be removed.
func ReapScratch(ctx context.Context, adminURL, prefix string, also []string, clean func(ctx context.Context, name string) error) (removed, inUse []string, err error) {
	if !namePattern.MatchString(prefix + "x") {
		return nil, nil, fmt.Errorf("reap: prefix %q: use lower-case letters, digits and _", prefix)
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, nil, fmt.Errorf("reap: connect as administrator: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `
		SELECT datname FROM pg_database WHERE starts_with(datname, $1)
		UNION
		SELECT regexp_replace(rolname, '_(owner|app)$', '') FROM pg_roles
		 WHERE starts_with(rolname, $1) AND rolname ~ '_(owner|app)$'`, prefix)
	if err != nil {
		return nil, nil, fmt.Errorf("reap: list %s*: %w", prefix, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, nil, fmt.Errorf("reap: list %s*: %w", prefix, err)
	}
	for _, n := range also {
		if strings.HasPrefix(n, prefix) && namePattern.MatchString(n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, name := range slices.Compact(names) {
		var held bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, scratchLockClass, name).Scan(&held); err != nil {
			return removed, inUse, fmt.Errorf("reap %s: %w", name, err)
		}
		if !held {
			inUse = append(inUse, name)
			continue
		}
		err := func() error {
			defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1, hashtext($2))`, scratchLockClass, name) //nolint:errcheck // the session ends soon anyway
			if clean != nil {
				if err := clean(ctx, name); err != nil {
					return err
				}
			}
			d := &Database{Name: name, OwnerRole: name + "_owner", RuntimeRole: name + "_app", adminURL: adminURL}
			return d.Drop(ctx)
		}()
		if err != nil {
			return removed, inUse, fmt.Errorf("reap %s: %w", name, err)
		}
		removed = append(removed, name)
	}
	return removed, inUse, nil
}
