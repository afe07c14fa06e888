// Package testenv gives every package's tests real, private services: a
// fresh Postgres database with its own owner and runtime roles, migrated,
// and a Redis key prefix, all removed when the test ends.
//
// Postgres: KONSTRUCT_TEST_PG_URL (default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable), a role that
// may create roles and databases. Redis: KONSTRUCT_TEST_REDIS_URL (default
// redis://127.0.0.1:6379/15). An unreachable service fails the test, telling
// you to run `make services`; nothing is skipped silently.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/migrations"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/secret"
	"github.com/konstruct/konstruct/store"
)

// Default service URLs, overridden by the environment variables above.
const (
	DefaultPGURL    = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	DefaultRedisURL = "redis://127.0.0.1:6379/15"
)

// PGAdminURL is the administrator URL the tests use.
func PGAdminURL() string {
	if u := os.Getenv("KONSTRUCT_TEST_PG_URL"); u != "" {
		return u
	}
	return DefaultPGURL
}

// PG is one test's private database.
type PG struct {
	// AdminURL connects to this database as the administrator (superuser
	// by default): for looking under RLS, e.g. at raw ciphertext.
	AdminURL string
	// OwnerURL is the owner role's (migrations); RuntimeURL the runtime
	// role's (NOSUPERUSER NOBYPASSRLS, what the daemon uses).
	OwnerURL, RuntimeURL   string
	DBName                 string
	OwnerRole, RuntimeRole string
}

// NewPG creates a database kt_<random> with its own owner and runtime roles,
// migrates it as the owner (granting the runtime role), and drops all of it
// when the test ends.
func NewPG(t testing.TB) *PG {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := PGAdminURL()
	db, err := store.Provision(ctx, admin, "kt_"+randomHex(6))
	if err != nil {
		t.Fatalf("testenv: PostgreSQL at %s: %v\n\tIs it running? Run `make services` (or set KONSTRUCT_TEST_PG_URL to a role that may create roles and databases).",
			konstruct.Redact(admin), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := db.Drop(ctx); err != nil {
			t.Errorf("testenv: drop database %s: %v", db.Name, err)
		}
	})
	if err := migrations.Up(ctx, db.OwnerURL, db.RuntimeURL, nil); err != nil {
		t.Fatalf("testenv: migrate %s: %v", db.Name, err)
	}
	return &PG{
		AdminURL: db.AdminURL, OwnerURL: db.OwnerURL, RuntimeURL: db.RuntimeURL,
		DBName: db.Name, OwnerRole: db.OwnerRole, RuntimeRole: db.RuntimeRole,
	}
}

// OpenStore opens a store on url (closed when the test ends).
func OpenStore(t testing.TB, url string, box *secret.Box) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, url, box, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("testenv: open store: %v", err)
	}
	t.Cleanup(st.Close)
	return st
}

// NewStore is a fresh database (NewPG) and a store on it as the runtime
// role, with a random secret key.
func NewStore(t testing.TB) (*store.Store, *PG) {
	t.Helper()
	pg := NewPG(t)
	box, err := secret.NewBox(SecretKey())
	if err != nil {
		t.Fatal(err)
	}
	return OpenStore(t, pg.RuntimeURL, box), pg
}

// SecretKey returns a random secret_key: base64 of 32 bytes.
func SecretKey() string { return secret.NewKey() }

// Redis is one test's slice of a shared Redis: every key it writes must
// start with Prefix, and those keys are deleted when the test ends.
type Redis struct {
	URL    string
	Client *redis.Client
	Prefix string // unique per test, "kt:<random>:"
}

// NewRedis connects to the test Redis and picks a fresh key prefix.
func NewRedis(t testing.TB) *Redis {
	t.Helper()
	u := os.Getenv("KONSTRUCT_TEST_REDIS_URL")
	if u == "" {
		u = DefaultRedisURL
	}
	opt, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("testenv: KONSTRUCT_TEST_REDIS_URL %q: %v", u, err)
	}
	c := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		t.Fatalf("testenv: Redis at %s: %v\n\tIs it running? Run `make services` (or set KONSTRUCT_TEST_REDIS_URL).", u, err)
	}
	r := &Redis{URL: u, Client: c, Prefix: "kt:" + randomHex(6) + ":"}
	t.Cleanup(func() {
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Keys under Prefix, and keys embedding it (asynq's
		// "asynq:{<prefix>queue}:…"), then asynq's registry of queues.
		iter := c.Scan(ctx, 0, "*"+r.Prefix+"*", 500).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
			if len(keys) == 500 {
				c.Unlink(ctx, keys...)
				keys = keys[:0]
			}
		}
		if len(keys) > 0 {
			c.Unlink(ctx, keys...)
		}
		if qs, err := c.SMembers(ctx, "asynq:queues").Result(); err == nil {
			for _, q := range qs {
				if strings.HasPrefix(q, r.Prefix) {
					c.SRem(ctx, "asynq:queues", q)
				}
			}
		}
		if err := iter.Err(); err != nil {
			t.Errorf("testenv: clean Redis keys %s*: %v", r.Prefix, err)
		}
	})
	return r
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewQueue opens a queue.Queue on r's Redis and prefix (closed when the
// test ends); cfg's URL and Prefix are filled in.
func (r *Redis) NewQueue(t testing.TB, cfg queue.Config) *queue.Queue {
	t.Helper()
	cfg.URL, cfg.Prefix = r.URL, r.Prefix
	q, err := queue.Open(cfg)
	if err != nil {
		t.Fatalf("testenv: open queue: %v", err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}
