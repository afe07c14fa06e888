package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a Redis the chaos run may crash and start again. The run starts
// its own (a private redis-server with AOF) unless ChaosOptions.Redis
// gives one; it never stops the shared Redis of the other phases.
type Redis interface {
	// URL is the daemon's redis.url.
	URL() string
	// Stop kills the server (SIGKILL: a crash, not a shutdown).
	Stop() error
	// Start starts it again with what it persisted and returns once it answers.
	Start() error
}

// ErrNoRedisServer is returned when redis-server is not installed: the
// phases that stop Redis need one of their own.
var ErrNoRedisServer = errors.New("redis-server is not installed (apt-get install redis-server): the phases that stop Redis need one of their own")

// redisServer is a redis-server of the run's own on a free loopback port,
// persisting to dir with AOF (appendfsync as given). Safe for concurrent use.
type redisServer struct {
	bin   string
	dir   string
	port  int
	fsync string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

var _ Redis = (*redisServer)(nil)

// startRedisServer starts a private redis-server in dir (created).
// fsync is AOF's appendfsync: "always" loses nothing when Redis itself is
// killed; "everysec" is Redis's default (up to a second of writes).
func startRedisServer(dir, fsync string) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNoRedisServer
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	s := &redisServer{bin: bin, dir: dir, port: port, fsync: fsync}
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *redisServer) URL() string { return "redis://127.0.0.1:" + strconv.Itoa(s.port) + "/0" }

// Start starts the server (again) and waits until it answers.
func (s *redisServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	// Not CommandContext: the run stops it itself (Stop), at a time of its choosing.
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", "", //nolint:noctx // see above
		"--appendonly", "yes", "--appendfsync", s.fsync, "--dir", s.dir, "--loglevel", "warning",
		"--maxmemory-policy", "noeviction")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done

	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(s.port), DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			s.cmd = nil
			return fmt.Errorf("redis-server on port %d exited at start (see %s)", s.port, filepath.Join(s.dir, "redis.log"))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on port %d does not answer: %w", s.port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server and waits for it to exit. Safe when stopped.
func (s *redisServer) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
	return nil
}

// setFsync changes appendfsync of the running server.
func (s *redisServer) setFsync(ctx context.Context, policy string) error {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(s.port)})
	defer c.Close()
	if err := c.ConfigSet(ctx, "appendfsync", policy).Err(); err != nil {
		return fmt.Errorf("redis CONFIG SET appendfsync %s: %w", policy, err)
	}
	s.mu.Lock()
	s.fsync = policy
	s.mu.Unlock()
	return nil
}
