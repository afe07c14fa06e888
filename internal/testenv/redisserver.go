package testenv

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a redis-server of the test's own, on a free loopback port,
// that the test may stop (as an outage or a crash of Redis) and start again
// with what it had persisted (appendonly, fsync every write). Tests that
// need one skip, saying so, where redis-server is not installed.
type RedisServer struct {
	t    testing.TB
	bin  string
	dir  string
	Port int
	// URL is redis://127.0.0.1:<port>/0.
	URL string
	// Addr is 127.0.0.1:<port>.
	Addr string

	args []string // after the defaults: they win

	mu  sync.Mutex
	cmd *exec.Cmd
}

// StartRedisServer starts a private redis-server with AOF persistence.
func StartRedisServer(t testing.TB) *RedisServer {
	t.Helper()
	return startRedisServer(t)
}

// startRedisServer starts a redis-server whose arguments, after the
// defaults of StartRedisServer, are args (a replica's --replicaof, a
// cluster node's --cluster-enabled yes).
func startRedisServer(t testing.TB, args ...string) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed: this test needs a Redis of its own that it may stop (apt-get install redis-server)")
	}
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	s := &RedisServer{t: t, bin: bin, dir: t.TempDir(), Port: port, URL: "redis://" + addr + "/0", Addr: addr, args: args}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// freePort is a loopback TCP port nobody listens on now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Start starts the server (again), with the data it persisted, and waits
// until it answers.
func (s *RedisServer) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	args := append([]string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "yes", "--appendfsync", "always", "--dir", s.dir, "--loglevel", "warning"}, s.args...)
	cmd := exec.Command(s.bin, args...)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("testenv: start redis-server: %v", err)
	}
	s.cmd = cmd
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(s.Port)})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("testenv: redis-server on port %d does not answer: %v", s.Port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Running reports whether the server was started and not stopped.
func (s *RedisServer) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Stop kills the server (SIGKILL: what it had not persisted is lost, as
// in a crash) and waits for it to exit. Safe to call when stopped.
func (s *RedisServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}
