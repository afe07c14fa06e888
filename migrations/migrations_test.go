package migrations_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/migrations"
	"github.com/konstruct/konstruct/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// provision makes an empty, unmigrated database with its roles.
func provision(t *testing.T) *store.Database {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var b [6]byte
	_, _ = rand.Read(b[:])
	db, err := store.Provision(ctx, testenv.PGAdminURL(), fmt.Sprintf("kt_mig_%x", b))
	if err != nil {
		t.Fatalf("provision (run `make services`?): %v", err)
	}
	t.Cleanup(func() {
		if err := db.Drop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return db
}

func version(t *testing.T, url string) (v int64, rows int) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(context.Background(), "SELECT max(version_id), count(*) FROM goose_db_version").Scan(&v, &rows); err != nil {
		t.Fatal(err)
	}
	return v, rows
}

func TestUpConcurrentAndIdempotent(t *testing.T) {
	t.Parallel()
	db := provision(t)
	ctx := context.Background()

	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = migrations.Up(ctx, db.OwnerURL, db.RuntimeURL, nil) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Up #%d: %v", i, err)
		}
	}
	v, rows := version(t, db.AdminURL)
	if v != migrations.Latest() {
		t.Fatalf("version %d, want %d", v, migrations.Latest())
	}
	// Again: nothing new applied, grants unchanged.
	if err := migrations.Up(ctx, db.OwnerURL, db.RuntimeURL, nil); err != nil {
		t.Fatalf("second Up: %v", err)
	}
	if v2, rows2 := version(t, db.AdminURL); v2 != v || rows2 != rows {
		t.Fatalf("second Up changed goose_db_version: %d/%d → %d/%d", v, rows, v2, rows2)
	}
	// The runtime role can use what it was granted.
	conn, err := pgx.Connect(ctx, db.RuntimeURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM konstruct_tenants()").Scan(&n); err != nil || n != 0 {
		t.Fatalf("runtime role calling a definer function: %d, %v", n, err)
	}
}

func TestUpMissingRuntimeRole(t *testing.T) {
	t.Parallel()
	db := provision(t)
	runtimeURL := strings.Replace(db.RuntimeURL, db.RuntimeRole, "konstruct_no_such_role", 1)
	err := migrations.Up(context.Background(), db.OwnerURL, runtimeURL, nil)
	if err == nil || !strings.Contains(err.Error(), `"konstruct_no_such_role"`) || !strings.Contains(err.Error(), "does not exist") ||
		!strings.Contains(err.Error(), "CREATE ROLE") {
		t.Fatalf("err = %v", err)
	}
	// Nothing applied before the check failed.
	conn, err := pgx.Connect(context.Background(), db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var exists bool
	_ = conn.QueryRow(context.Background(), "SELECT to_regclass('public.tenants') IS NOT NULL").Scan(&exists)
	if exists {
		t.Error("migrations applied although the runtime role is missing")
	}
}

func TestUpSameRole(t *testing.T) {
	t.Parallel()
	db := provision(t)
	// One URL for both: migrations apply, no grants are attempted.
	if err := migrations.Up(context.Background(), "", db.OwnerURL, nil); err != nil {
		t.Fatal(err)
	}
	if v, _ := version(t, db.AdminURL); v != migrations.Latest() {
		t.Fatalf("version %d", v)
	}
}

func TestUpUnreachable(t *testing.T) {
	t.Parallel()
	err := migrations.Up(context.Background(), "postgres://x:supersecret@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", "postgres://y@127.0.0.1:1/x", nil)
	if err == nil || !strings.Contains(err.Error(), "database.migrate_url") || strings.Contains(err.Error(), "supersecret") {
		t.Fatalf("err = %v", err)
	}
}

func TestLatest(t *testing.T) {
	t.Parallel()
	if migrations.Latest() < 1 {
		t.Fatal("no migrations embedded")
	}
}
