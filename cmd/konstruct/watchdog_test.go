package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/slacksim"
)

// notifySocket is systemd's end of sd_notify: a unixgram socket that
// records every datagram the daemon sends, with when it came.
type notifySocket struct {
	path string
	conn *net.UnixConn
	done chan struct{}

	mu   sync.Mutex
	msgs []notifyMsg
}

type notifyMsg struct {
	at   time.Time
	text string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	// A short path: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "kn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	n := &notifySocket{path: filepath.Join(dir, "notify"), done: make(chan struct{})}
	n.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(n.done)
		buf := make([]byte, 4096)
		for {
			k, _, err := n.conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			at := time.Now()
			n.mu.Lock()
			for line := range strings.SplitSeq(string(buf[:k]), "\n") {
				if line != "" {
					n.msgs = append(n.msgs, notifyMsg{at, line})
				}
			}
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = n.conn.Close(); <-n.done })
	return n
}

// times returns when text came, in order.
func (n *notifySocket) times(text string) []time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []time.Time
	for _, m := range n.msgs {
		if m.text == text {
			out = append(out, m.at)
		}
	}
	return out
}

// TestWatchdogPingedWhileRedisIsDown runs the binary as systemd runs a
// Type=notify unit with WatchdogSec=2s (NOTIFY_SOCKET, WATCHDOG_USEC; no
// WATCHDOG_PID) and kills its Redis. WATCHDOG=1 keeps coming at least every
// 2 s all through the outage: the watchdog means "this process is alive",
// so a Redis outage never gets the daemon aborted and restarted in a loop.
func TestWatchdogPingedWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs the binary and kills its Redis (~15 s)")
	}
	srv := testenv.StartRedisServer(t)
	pg := testenv.NewPG(t) // migrated
	bin := konstructBinary(t)
	sim := slacksim.New()
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	notify := listenNotify(t)

	const watchdog = 2 * time.Second
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KONSTRUCT_") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, "WATCHDOG_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"KONSTRUCT_DATABASE_URL="+pg.RuntimeURL,
		"KONSTRUCT_REDIS_URL="+srv.URL,
		"KONSTRUCT_REDIS_PREFIX=kt:watchdog:",
		"KONSTRUCT_SLACK_API_URL="+sim.APIURL(),
		"KONSTRUCT_LLM_BASE_URL=http://127.0.0.1:9/v1/", // never called: no workspace
		"KONSTRUCT_LLM_MODEL=fake-model",
		"KONSTRUCT_SECRET_KEY="+testenv.SecretKey(),
		"KONSTRUCT_HTTP_ADDR=127.0.0.1:0",
		"KONSTRUCT_STATE_DIR="+t.TempDir(),
		"KONSTRUCT_LOG_FORMAT=text",
		"NOTIFY_SOCKET="+notify.path,
		"WATCHDOG_USEC="+strconv.FormatInt(watchdog.Microseconds(), 10),
	)
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "run") //nolint:noctx // stopped with SIGTERM below, then killed
	cmd.Env, cmd.Stderr = env, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	alive := func() bool {
		select {
		case err := <-exited:
			exited <- err
			return false
		default:
			return true
		}
	}

	deadline := time.Now().Add(60 * time.Second)
	for len(notify.times("READY=1")) == 0 || len(notify.times("WATCHDOG=1")) == 0 {
		if !alive() || time.Now().After(deadline) {
			t.Fatalf("no READY=1 and WATCHDOG=1 from the daemon (alive %v); stderr:\n%s", alive(), stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	srv.Stop()
	down := time.Now()
	const outage = 4 * watchdog
	time.Sleep(outage)
	end := time.Now()
	if !alive() {
		t.Fatalf("the daemon exited while Redis was down; stderr:\n%s", stderr.String())
	}

	// Every WatchdogSec window of the outage had a ping: no gap longer
	// than WatchdogSec from Redis going down to the end.
	prev, gaps := down, []time.Duration{}
	pings := 0
	for _, at := range notify.times("WATCHDOG=1") {
		if at.Before(down) || at.After(end) {
			continue
		}
		pings++
		gaps = append(gaps, at.Sub(prev))
		prev = at
	}
	gaps = append(gaps, end.Sub(prev))
	worst := time.Duration(0)
	for _, g := range gaps {
		worst = max(worst, g)
	}
	if worst > watchdog {
		t.Errorf("while Redis was down (%v) the daemon sent WATCHDOG=1 %d times, with a gap of %v > WatchdogSec %v: systemd would have killed it",
			outage, pings, worst.Round(time.Millisecond), watchdog)
	}

	srv.Start()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Errorf("wait: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("the daemon did not exit within 30 s of SIGTERM")
	}
}
