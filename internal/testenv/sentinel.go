package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the name the sentinels of StartSentinel monitor.
const SentinelMaster = "mymaster"

// SentinelOptions shapes StartSentinel's deployment; zero values take the
// defaults noted.
type SentinelOptions struct {
	// Replicas of the master (default 2: a master lost, the promoted
	// replica still has one to confirm writes).
	Replicas int
	// Sentinels watching the master (default 3, quorum 2).
	Sentinels int
	// DownAfter is how long a master may not answer before the sentinels
	// fail it over (default 1 s; production setups use 5–30 s).
	DownAfter time.Duration
	// AppendFsync is the data nodes' appendfsync (default everysec).
	AppendFsync string
}

// Sentinel is a Redis master, its replicas and the sentinels that watch
// them, every one a process of the test's own on a free loopback port, as
// Debian's redis-server and redis-sentinel packages run them. The test may
// kill the master (a crash: the sentinels promote a replica) or ask for a
// failover, and start a killed node again (it comes back as a replica).
type Sentinel struct {
	t testing.TB
	// Nodes are the data nodes; Nodes[0] is the first master.
	Nodes []*RedisServer
	// Addrs are the sentinels' host:port.
	Addrs []string

	mu        sync.Mutex
	sentinels []*exec.Cmd
}

// StartSentinel starts the data nodes and the sentinels and waits until
// the sentinels agree on the master and see its replicas. Tests that need
// it skip, saying so, where redis-server is not installed.
func StartSentinel(t testing.TB, o SentinelOptions) *Sentinel {
	t.Helper()
	o.Replicas = max(o.Replicas, 0)
	if o.Replicas == 0 {
		o.Replicas = 2
	}
	if o.Sentinels <= 0 {
		o.Sentinels = 3
	}
	if o.DownAfter <= 0 {
		o.DownAfter = time.Second
	}
	if o.AppendFsync == "" {
		o.AppendFsync = "everysec"
	}
	bin := sentinelBinary(t)
	s := &Sentinel{t: t}
	master := startRedisServer(t, "--appendfsync", o.AppendFsync)
	s.Nodes = append(s.Nodes, master)
	for range o.Replicas {
		s.Nodes = append(s.Nodes, startRedisServer(t, "--appendfsync", o.AppendFsync, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port)))
	}
	for i := range o.Sentinels {
		port := freePort(t)
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
			"sentinel monitor %s 127.0.0.1 %d %d\n"+
			"sentinel down-after-milliseconds %s %d\n"+
			"sentinel failover-timeout %s %d\n"+
			"sentinel parallel-syncs %s 1\n",
			port, dir, filepath.Join(dir, "sentinel.log"),
			SentinelMaster, master.Port, o.Sentinels/2+1,
			SentinelMaster, o.DownAfter.Milliseconds(),
			SentinelMaster, max(10*o.DownAfter, 10*time.Second).Milliseconds(),
			SentinelMaster)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin[0], append(bin[1:], conf, "--sentinel")...) //nolint:noctx // stopped by Cleanup
		if err := cmd.Start(); err != nil {
			t.Fatalf("testenv: start sentinel %d: %v", i, err)
		}
		s.mu.Lock()
		s.sentinels = append(s.sentinels, cmd)
		s.mu.Unlock()
		s.Addrs = append(s.Addrs, "127.0.0.1:"+strconv.Itoa(port))
	}
	t.Cleanup(s.stopSentinels)
	// Ready: the replicas are in sync (online, not loading the master's
	// snapshot), every sentinel names the master and knows the replicas
	// and the other sentinels.
	s.waitFor(30*time.Second, "the replicas in sync with the master", func(ctx context.Context) bool {
		c := redis.NewClient(&redis.Options{Addr: master.Addr})
		defer c.Close()
		info, err := c.Info(ctx, "replication").Result()
		return err == nil && strings.Count(info, "state=online") == o.Replicas
	})
	s.waitFor(30*time.Second, "the sentinels to see the master, its replicas and each other", func(ctx context.Context) bool {
		for _, a := range s.Addrs {
			c := redis.NewSentinelClient(&redis.Options{Addr: a})
			m, err := c.Master(ctx, SentinelMaster).Result()
			_ = c.Close()
			if err != nil || m["ip"]+":"+m["port"] != master.Addr || m["num-slaves"] != strconv.Itoa(o.Replicas) ||
				m["num-other-sentinels"] != strconv.Itoa(o.Sentinels-1) {
				return false
			}
		}
		return true
	})
	return s
}

// sentinelBinary is redis-sentinel (Debian's redis-sentinel package), or
// redis-server in sentinel mode, which is the same program.
func sentinelBinary(t testing.TB) []string {
	t.Helper()
	if p, err := exec.LookPath("redis-sentinel"); err == nil {
		return []string{p}
	}
	if p, err := exec.LookPath("redis-server"); err == nil {
		return []string{p}
	}
	t.Skip("redis-server is not installed: this test needs a Redis master, replicas and sentinels of its own (apt-get install redis-server redis-sentinel)")
	return nil
}

func (s *Sentinel) stopSentinels() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.sentinels {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	s.sentinels = nil
}

// MasterAddr is the master's host:port, as a majority of the sentinels name
// it now.
func (s *Sentinel) MasterAddr() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	votes := map[string]int{}
	for _, a := range s.Addrs {
		c := redis.NewSentinelClient(&redis.Options{Addr: a})
		hp, err := c.GetMasterAddrByName(ctx, SentinelMaster).Result()
		_ = c.Close()
		if err == nil && len(hp) == 2 {
			votes[hp[0]+":"+hp[1]]++
		}
	}
	for addr, n := range votes {
		if n > len(s.Addrs)/2 {
			return addr
		}
	}
	return ""
}

// Master is the data node that is the master now.
func (s *Sentinel) Master() *RedisServer {
	addr := s.MasterAddr()
	for _, n := range s.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	s.t.Fatalf("testenv: no node is the master the sentinels name (%q)", addr)
	return nil
}

// KillMaster SIGKILLs the master (a crash) and returns it, stopped; the
// sentinels fail it over after DownAfter. WaitFailover waits for that.
func (s *Sentinel) KillMaster() *RedisServer {
	m := s.Master()
	m.Stop()
	return m
}

// Failover asks the sentinels for a failover now (SENTINEL FAILOVER, as an
// operator does before maintenance of the master's machine).
func (s *Sentinel) Failover() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addrs[0]})
	defer c.Close()
	if err := c.Failover(ctx, SentinelMaster).Err(); err != nil {
		s.t.Fatalf("testenv: SENTINEL FAILOVER: %v", err)
	}
}

// WaitFailover waits until the sentinels name a master other than old and
// that node answers as a master with at least one replica online (so a
// write there can be confirmed), and returns its address.
func (s *Sentinel) WaitFailover(old string, timeout time.Duration) string {
	s.t.Helper()
	var now string
	s.waitFor(timeout, "a failover away from "+old, func(ctx context.Context) bool {
		now = s.MasterAddr()
		if now == "" || now == old {
			return false
		}
		c := redis.NewClient(&redis.Options{Addr: now})
		defer c.Close()
		info, err := c.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:master") && !strings.Contains(info, "connected_slaves:0")
	})
	return now
}

// Replicas are the data nodes the master streams to now (by address).
func (s *Sentinel) Replicas() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addrs[0]})
	defer c.Close()
	list, err := c.Replicas(ctx, SentinelMaster).Result()
	if err != nil {
		return nil
	}
	var out []string
	for _, r := range list {
		if !strings.Contains(r["flags"], "down") && !strings.Contains(r["flags"], "disconnected") {
			out = append(out, r["ip"]+":"+r["port"])
		}
	}
	slices.Sort(out)
	return out
}

func (s *Sentinel) waitFor(timeout time.Duration, what string, ok func(context.Context) bool) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		done := ok(ctx)
		cancel()
		if done {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("testenv: waited %v for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
