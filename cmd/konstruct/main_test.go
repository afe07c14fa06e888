package main

// Shared helpers of the command's tests: they call run() (or newDaemon)
// in process with their own environment and streams, against real
// Postgres and Redis (internal/testenv), the Slack emulator and the fake
// LLM over loopback.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/konstruct/konstruct/config"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/llm/llmfake"
	"github.com/konstruct/konstruct/slacksim"
)

func TestMain(m *testing.M) {
	code := m.Run()
	// Keep-alive connections of the default transport (slack-go's default
	// client in the admin commands) are idle, not leaked: close them first.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// env is one test's world: a private database, a Redis prefix, a Slack
// emulator and a fake LLM, and the KONSTRUCT_* environment pointing at them.
type env struct {
	t   *testing.T
	pg  *testenv.PG
	rd  *testenv.Redis
	sim *slacksim.Server
	llm *llmfake.Server
	key string
	// vars is the environment run() sees.
	vars map[string]string
}

type envOpts struct {
	simOpts []slacksim.Option
	llm     func(llmfake.ChatRequest) llmfake.Reply
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	e := &env{t: t, pg: testenv.NewPG(t), rd: testenv.NewRedis(t), key: testenv.SecretKey()}
	e.sim = slacksim.New(o.simOpts...)
	if err := e.sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.sim.Close() })
	h := o.llm
	if h == nil {
		h = func(r llmfake.ChatRequest) llmfake.Reply { return llmfake.Reply{Text: "Answer: " + r.LastUser()} }
	}
	e.llm = llmfake.New(llmfake.WithHandler(h), llmfake.WithoutRecording())
	t.Cleanup(e.llm.Close)
	e.vars = map[string]string{
		"KONSTRUCT_DATABASE_URL":         e.pg.RuntimeURL,
		"KONSTRUCT_DATABASE_MIGRATE_URL": e.pg.OwnerURL,
		"KONSTRUCT_REDIS_URL":            e.rd.URL,
		"KONSTRUCT_REDIS_PREFIX":         e.rd.Prefix,
		"KONSTRUCT_SLACK_API_URL":        e.sim.APIURL(),
		"KONSTRUCT_LLM_BASE_URL":         e.llm.URL(),
		"KONSTRUCT_LLM_MODEL":            "fake-model",
		"KONSTRUCT_SECRET_KEY":           e.key,
		"KONSTRUCT_HTTP_ADDR":            "127.0.0.1:0",
		"KONSTRUCT_LOG_LEVEL":            "warn",
		// Never the machine's /var/lib/konstruct; a daemon started with
		// startDaemon or startRun gets a directory of its own.
		"KONSTRUCT_STATE_DIR": t.TempDir(),
	}
	return e
}

// with returns a copy of the environment with some variables changed ("" unsets).
func (e *env) with(kv ...string) map[string]string {
	m := make(map[string]string, len(e.vars))
	for k, v := range e.vars {
		m[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// result is what one run() printed and returned.
type result struct {
	stdout, stderr string
	err            error
}

// line is what main prints for the error: one line, tokens redacted.
func (r result) line() string {
	if r.err == nil {
		return ""
	}
	return errorLine(r.err)
}

// cli runs the command line with vars as the environment.
func cli(t *testing.T, vars map[string]string, args ...string) result {
	t.Helper()
	return cliIn(t, vars, strings.NewReader(""), args...)
}

func cliIn(t *testing.T, vars map[string]string, stdin io.Reader, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	err := run(ctx, args, func(k string) string { return vars[k] }, stdin, &out, &errb)
	r := result{stdout: out.String(), stderr: errb.String(), err: err}
	noTokens(t, "stdout of "+strings.Join(args, " "), r.stdout)
	noTokens(t, "stderr of "+strings.Join(args, " "), r.stderr)
	if err != nil {
		line := r.line()
		noTokens(t, "error of "+strings.Join(args, " "), line)
		if strings.Contains(line, "\n") {
			t.Errorf("%s: error is not one line: %q", strings.Join(args, " "), line)
		}
	}
	return r
}

// mustCLI runs the command line and fails the test on an error.
func mustCLI(t *testing.T, vars map[string]string, args ...string) result {
	t.Helper()
	r := cli(t, vars, args...)
	if r.err != nil {
		t.Fatalf("konstruct %s: %s\nstderr: %s", strings.Join(args, " "), r.line(), r.stderr)
	}
	return r
}

var tokenRE = regexp.MustCompile(`x(?:oxb|oxp|app)-[^\[\s]`)

// noTokens fails when s shows a Slack token: anything after xoxb-/xapp-/xoxp-
// other than the redaction marker.
func noTokens(t *testing.T, what, s string) {
	t.Helper()
	if m := tokenRE.FindString(s); m != "" {
		t.Errorf("%s shows a token (%q…):\n%s", what, m, s)
	}
}

// seed creates a tenant, its agent and a workspace of the emulator through
// the CLI and returns the tenant id and the workspace.
func (e *env) seed(slug string) (string, slacksim.WorkspaceSpec) {
	t := e.t
	t.Helper()
	ws := e.sim.AddWorkspace(slacksim.WorkspaceSpec{})
	id := strings.TrimSpace(mustCLI(t, e.vars, "tenant", "create", "--name", "Acme "+slug, "--slug", slug).stdout)
	mustCLI(t, e.vars, "agent", "set", "--tenant", slug, "--name", "Mara", "--role", "Support", "--persona", "Kind.")
	team := strings.TrimSpace(mustCLI(t, e.vars, "workspace", "add", "--tenant", slug, "--app-token", ws.AppToken, "--bot-token", ws.BotToken).stdout)
	if team != ws.TeamID {
		t.Fatalf("workspace add printed %q, want %q", team, ws.TeamID)
	}
	return id, ws
}

// testDaemon is a daemon started in process with newDaemon + Run.
type testDaemon struct {
	d      *daemonT
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
	url    string // http://addr
	client *http.Client
}

// startDaemon builds and runs a daemon from vars, as `konstruct run` would.
func startDaemon(t *testing.T, vars map[string]string, r roles, shutdown time.Duration) *testDaemon {
	t.Helper()
	// Each daemon its own state directory (its intake spool), as two
	// processes on one machine must have.
	vars = maps.Clone(vars)
	vars["KONSTRUCT_STATE_DIR"] = t.TempDir()
	cfg, err := config.Load(config.Options{Getenv: func(k string) string { return vars[k] }})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(daemonParts(r)...); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	tr := &http.Transport{}
	hc := &http.Client{Transport: tr}
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	d, err := newDaemon(ctx, cfg, r, newLogger(logs, "json", "info"), &daemonHooks{HTTPClient: hc, Ready: ready, ShutdownTimeout: shutdown})
	if err != nil {
		cancel()
		t.Fatalf("newDaemon: %v", err)
	}
	dm := &testDaemon{d: d, cancel: cancel, done: make(chan error, 1), logs: logs,
		url: "http://" + d.httpLn.Addr().String(), client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}}
	go func() { dm.done <- d.Run(ctx) }()
	t.Cleanup(func() {
		dm.stop(t, 40*time.Second)
		tr.CloseIdleConnections()
		dm.client.CloseIdleConnections()
		noTokens(t, "daemon logs", logs.String())
		if t.Failed() {
			t.Logf("daemon logs:\n%s", logs.String())
		}
	})
	select {
	case <-ready:
	case err := <-dm.done:
		dm.done <- err
		t.Fatalf("daemon stopped at start: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("daemon not ready after 20s")
	}
	return dm
}

// stop cancels the daemon's context (what SIGTERM does) and returns Run's
// error and how long it took; it is safe to call twice.
func (dm *testDaemon) stop(t *testing.T, limit time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	dm.cancel()
	select {
	case err, ok := <-dm.done:
		if ok {
			close(dm.done)
		}
		return time.Since(start), err
	case <-time.After(limit):
		t.Fatalf("daemon did not stop within %v", limit)
		return limit, nil
	}
}

// get fetches a path of the daemon's HTTP server.
func (dm *testDaemon) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := dm.client.Get(dm.url + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// freeAddr returns a loopback address nobody listens on (now).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// syncBuffer is a bytes.Buffer safe for concurrent writers (log handlers).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
