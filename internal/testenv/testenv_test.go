package testenv_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/konstruct/konstruct/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPGCleanup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var pg *testenv.PG
	t.Run("use", func(t *testing.T) {
		st, p := testenv.NewStore(t)
		pg = p
		if err := st.CheckRole(ctx); err != nil {
			t.Fatal(err)
		}
	})
	conn, err := pgx.Connect(ctx, testenv.PGAdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var dbs, roles int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_database WHERE datname = $1),
		(SELECT count(*) FROM pg_roles WHERE rolname IN ($2, $3))`, pg.DBName, pg.OwnerRole, pg.RuntimeRole).Scan(&dbs, &roles); err != nil {
		t.Fatal(err)
	}
	if dbs != 0 || roles != 0 {
		t.Fatalf("left behind: %d databases, %d roles", dbs, roles)
	}
}

func TestRedisCleanup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var r *testenv.Redis
	keys := func(r *testenv.Redis) []string {
		return []string{r.Prefix + "a", r.Prefix + "b:c", "asynq:{" + r.Prefix + "replies}:pending"}
	}
	t.Run("use", func(t *testing.T) {
		r = testenv.NewRedis(t)
		for _, k := range keys(r) {
			if err := r.Client.Set(ctx, k, "1", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	})
	check := testenv.NewRedis(t)
	if n, err := check.Client.Exists(ctx, keys(r)...).Result(); err != nil || n != 0 {
		t.Fatalf("%d keys left under %s (%v)", n, r.Prefix, err)
	}
	if check.Prefix == r.Prefix {
		t.Fatal("prefixes are not unique")
	}
}

func TestSecretKey(t *testing.T) {
	t.Parallel()
	if a, b := testenv.SecretKey(), testenv.SecretKey(); a == b || len(a) != 44 {
		t.Fatalf("SecretKey: %q %q", a, b)
	}
}
