package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PGServer is a PostgreSQL cluster of the test's own (initdb, pg_ctl) on a
// free loopback port, trusting loopback connections, that the test may
// stop (a crash: pg_ctl stop -m immediate), start again and turn read-only
// or read-write — to stand for the primary and the standby of an HA setup
// as a client sees them. Tests that need one skip, saying so, where the
// PostgreSQL server binaries are not installed.
type PGServer struct {
	t    testing.TB
	bin  string // the directory of initdb and pg_ctl
	dir  string
	Port int
	// AdminURL connects as the superuser postgres to database postgres.
	AdminURL string
	runAs    []string // runuser -u postgres -- when the test runs as root

	mu      sync.Mutex
	running bool
}

// StartPGServer initialises and starts a private cluster.
func StartPGServer(t testing.TB) *PGServer {
	t.Helper()
	bin := pgBinDir()
	if bin == "" {
		t.Skip("the PostgreSQL server binaries (initdb, pg_ctl) are not installed: this test needs clusters of its own (apt-get install postgresql)")
	}
	dir, err := os.MkdirTemp("", "konstruct-pg-")
	if err != nil {
		t.Fatal(err)
	}
	s := &PGServer{t: t, bin: bin, dir: dir, Port: freePort(t)}
	s.AdminURL = "postgres://postgres@127.0.0.1:" + strconv.Itoa(s.Port) + "/postgres?sslmode=disable"
	t.Cleanup(func() {
		s.Stop()
		_ = os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root: as the postgres user, which
		// then owns the directory.
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skip("running as root without a postgres user: cannot start a PostgreSQL cluster of the test's own")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		s.runAs = []string{"runuser", "-u", "postgres", "--"}
	}
	if err := s.run("initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"); err != nil {
		t.Fatal(err)
	}
	// The free port may be taken between freePort and the start (a busy
	// machine, tests in parallel): another one, a few times.
	for attempt := 1; ; attempt++ {
		err := s.start()
		if err == nil {
			return s
		}
		if attempt == 3 {
			t.Fatal(err)
		}
		s.Port = freePort(t)
		s.AdminURL = "postgres://postgres@127.0.0.1:" + strconv.Itoa(s.Port) + "/postgres?sslmode=disable"
	}
}

func pgBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.Reverse(dirs) // the newest version first (by name, good enough for 1x)
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	return ""
}

func (s *PGServer) run(name string, args ...string) error {
	argv := append(append(slices.Clone(s.runAs), filepath.Join(s.bin, name)), args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("testenv: %s: %w\n%s", name, err, out)
	}
	return nil
}

// Start starts the cluster (again) and waits until it accepts connections.
func (s *PGServer) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

func (s *PGServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return nil
	}
	data, logFile := filepath.Join(s.dir, "data"), filepath.Join(s.dir, "log")
	err := s.run("pg_ctl", "-D", data, "-l", logFile, "-w", "-o",
		"-c listen_addresses=127.0.0.1 -p "+strconv.Itoa(s.Port)+" -k "+data+" -c fsync=off -c max_connections=50", "start")
	if err != nil {
		b, _ := os.ReadFile(logFile)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		return fmt.Errorf("%w\nserver log:\n%s", err, strings.Join(lines[max(0, len(lines)-5):], "\n"))
	}
	s.running = true
	return nil
}

// Stop stops the cluster at once (-m immediate: as a crash of its machine
// looks to clients). Safe to call when stopped.
func (s *PGServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return
	}
	if err := s.run("pg_ctl", "-D", filepath.Join(s.dir, "data"), "-m", "immediate", "-w", "stop"); err != nil {
		s.t.Error(err)
	}
	s.running = false
}

// SetReadOnly makes every new transaction on the cluster read-only (on)
// or not (off), as a standby and a promoted one look to a client: what
// target_session_attrs=read-write tells apart.
func (s *PGServer) SetReadOnly(on bool) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.AdminURL)
	if err != nil {
		s.t.Fatalf("testenv: connect to %s: %v", s.AdminURL, err)
	}
	defer conn.Close(ctx)
	v := "off"
	if on {
		v = "on"
	}
	for _, q := range []string{"ALTER SYSTEM SET default_transaction_read_only = " + v, "SELECT pg_reload_conf()"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			s.t.Fatalf("testenv: %s: %v", q, err)
		}
	}
}
