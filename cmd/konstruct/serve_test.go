package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/llm/llmfake"
	"github.com/konstruct/konstruct/slacksim"
)

// TestRunRefusesPrivilegedRole: RLS would not confine a superuser, a
// BYPASSRLS role or the tables' owner; run says why and how to fix it.
func TestRunRefusesPrivilegedRole(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	bypass := "kt_bypass_" + randomHex(4)
	rows := adminQuery(t, e.pg.AdminURL, fmt.Sprintf("CREATE ROLE %s LOGIN NOSUPERUSER BYPASSRLS PASSWORD 'pw'", bypass))
	rows.Close()
	adminQuery(t, e.pg.AdminURL, fmt.Sprintf("GRANT CONNECT ON DATABASE %s TO %s", e.pg.DBName, bypass)).Close()
	t.Cleanup(func() {
		adminQuery(t, e.pg.AdminURL, fmt.Sprintf("REVOKE ALL ON DATABASE %s FROM %s", e.pg.DBName, bypass)).Close()
		adminQuery(t, e.pg.AdminURL, "DROP ROLE IF EXISTS "+bypass).Close()
	})
	bypassURL := strings.Replace(e.pg.AdminURL, "postgres://postgres@", "postgres://"+bypass+":pw@", 1)
	if bypassURL == e.pg.AdminURL {
		t.Skipf("cannot derive a URL for a new role from %s", e.pg.AdminURL)
	}

	for _, tc := range []struct {
		name string
		url  string
		want []string
	}{
		{"superuser", e.pg.AdminURL, []string{"superuser", "Row-Level Security", "NOSUPERUSER"}},
		{"bypassrls", bypassURL, []string{bypass, "BYPASSRLS", "ALTER ROLE " + bypass + " NOBYPASSRLS"}},
		{"table owner", e.pg.OwnerURL, []string{e.pg.OwnerRole, "owns", "migrate_url"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range []string{"run", "gateway", "worker"} {
				r := cli(t, e.with("KONSTRUCT_DATABASE_URL", tc.url), cmd)
				if r.err == nil {
					t.Fatalf("%s started as %s", cmd, tc.name)
				}
				for _, w := range tc.want {
					if !strings.Contains(r.line(), w) {
						t.Errorf("%s: error %q does not say %q", cmd, r.line(), w)
					}
				}
			}
		})
	}
}

// asyncRun is `konstruct ARGS` running in the background.
type asyncRun struct {
	cancel         context.CancelFunc
	done           chan error
	stdout, stderr *syncBuffer
}

func startRun(t *testing.T, vars map[string]string, args ...string) *asyncRun {
	t.Helper()
	vars = maps.Clone(vars)
	vars["KONSTRUCT_STATE_DIR"] = t.TempDir() // its own, as two processes must have
	ctx, cancel := context.WithCancel(context.Background())
	r := &asyncRun{cancel: cancel, done: make(chan error, 1), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	go func() {
		r.done <- run(ctx, args, func(k string) string { return vars[k] }, strings.NewReader(""), r.stdout, r.stderr)
	}()
	t.Cleanup(func() {
		if _, err := r.stop(t); err != nil {
			t.Errorf("konstruct %s: %s", strings.Join(args, " "), errorLine(err))
		}
		noTokens(t, "logs", r.stderr.String())
		if t.Failed() {
			t.Logf("logs:\n%s", r.stderr.String())
		}
	})
	return r
}

func (r *asyncRun) stop(t *testing.T) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return time.Since(start), err
	case <-time.After(35 * time.Second):
		t.Fatal("konstruct did not stop within 35s")
		return 0, nil
	}
}

// TestWorkspaceAddRemoveWhileRunning: `konstruct run` picks up a workspace
// added with the CLI within 10 s, answers in it, and drops it within 10 s
// of `workspace remove`, without a restart.
func TestWorkspaceAddRemoveWhileRunning(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{simOpts: []slacksim.Option{slacksim.WithAckTimeout(time.Second)}})
	mustCLI(t, e.vars, "tenant", "create", "--name", "Live", "--slug", "live")
	mustCLI(t, e.vars, "agent", "set", "--tenant", "live", "--name", "Mara", "--role", "Support", "--persona", "Kind.")
	addr := freeAddr(t)
	d := startRun(t, e.with("KONSTRUCT_HTTP_ADDR", addr), "run")
	waitFor(t, 10*time.Second, "the daemon's HTTP server", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})

	ws := e.sim.AddWorkspace(slacksim.WorkspaceSpec{})
	mustCLI(t, e.vars, "workspace", "add", "--tenant", "live", "--app-token", ws.AppToken, "--bot-token", ws.BotToken)
	added := time.Now()
	waitFor(t, 10*time.Second, "a socket after workspace add", func() bool { return e.sim.Connections(ws.AppID) > 0 })
	t.Logf("connected %v after workspace add", time.Since(added).Round(time.Millisecond))

	ts, err := e.sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "hello live", "")
	if err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, e.sim, ws, ws.GeneralChannelID, ts, "hello live", 15*time.Second)

	mustCLI(t, e.vars, "workspace", "remove", ws.TeamID)
	removed := time.Now()
	waitFor(t, 10*time.Second, "no socket after workspace remove", func() bool { return e.sim.Connections(ws.AppID) == 0 })
	t.Logf("disconnected %v after workspace remove", time.Since(removed).Round(time.Millisecond))

	took, err := d.stop(t)
	if err != nil {
		t.Fatalf("run returned %s", errorLine(err))
	}
	if took > 30*time.Second {
		t.Errorf("stop took %v", took)
	}
	// Logs are JSON when stderr is not a terminal.
	sc := bufio.NewScanner(strings.NewReader(d.stderr.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Errorf("log line is not JSON: %q", sc.Text())
		}
	}
}

// waitAnswer waits until the thread of the post at ts holds exactly one
// bot reply that is final (no placeholder, not streaming) and answers want.
func waitAnswer(t *testing.T, sim *slacksim.Server, ws slacksim.WorkspaceSpec, channel, ts, want string, d time.Duration) slacksim.ViewMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	v, err := sim.WaitThread(ctx, ws.TeamID, channel, ts, func(v slacksim.ThreadView) bool { return answered(v, want) })
	if err != nil {
		t.Fatalf("no answer to %q: %v; thread: %+v", want, err, v.Messages)
	}
	return v.BotReplies()[0]
}

func answered(v slacksim.ThreadView, want string) bool {
	b := v.BotReplies()
	return len(b) == 1 && !b[0].Streaming && strings.HasPrefix(b[0].Text, "Answer: ") && strings.Contains(b[0].Text, want)
}

// TestGracefulShutdownUnderLoad: SIGTERM (ctx cancelled) with replies in
// flight; a second daemon on the same database and Redis takes over, and
// every mention gets exactly one final answer.
func TestGracefulShutdownUnderLoad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		shutdown time.Duration // worker shutdown timeout of the first daemon
	}{
		{"in-flight finish", 20 * time.Second},
		{"in-flight handed back", 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var started atomic.Int64
			slow := func(r llmfake.ChatRequest) llmfake.Reply {
				started.Add(1)
				return llmfake.Reply{
					Text:            "Answer: " + r.LastUser() + " — and some more words so that the answer streams for a while.",
					FirstTokenDelay: 300 * time.Millisecond, TokenDelay: 60 * time.Millisecond,
				}
			}
			e := newEnv(t, envOpts{
				simOpts: []slacksim.Option{slacksim.WithAckTimeout(time.Second), slacksim.WithRateLimits(false)},
				llm:     slow,
			})
			_, ws := e.seed("load")
			// Slack's per-channel pace of placeholders is not what this test
			// is about: a budget to match the emulator without limits.
			cfgFile := filepath.Join(t.TempDir(), "konstruct.yaml")
			if err := os.WriteFile(cfgFile, []byte("slack:\n  rate_limits:\n    - {method: chat.postMessage, per_minute: 6000, burst: 100}\n    - {method: chat.update, per_minute: 6000, burst: 100}\n    - {method: chat.delete, per_minute: 6000, burst: 100}\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			vars := e.with("KONSTRUCT_WORKER_CONCURRENCY", "8", "KONSTRUCT_RATELIMIT_PER_MINUTE", "1000", "KONSTRUCT_RATELIMIT_PER_USER_PER_MINUTE", "1000",
				"KONSTRUCT_CONFIG", cfgFile)

			d1 := startDaemon(t, vars, roles{gateway: true, worker: true}, tc.shutdown)
			waitFor(t, 10*time.Second, "sockets", func() bool { return e.sim.Connections(ws.AppID) >= 2 })

			const n = 30
			ts := make([]string, n)
			for i := range ts {
				var err error
				ts[i], err = e.sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[i%2], fmt.Sprintf("question %02d please", i), "")
				if err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, 10*time.Second, "replies in flight", func() bool { return started.Load() >= 6 })
			took, err := d1.stop(t, 35*time.Second)
			if err != nil {
				t.Errorf("first daemon's Run = %v, want nil", err)
			}
			if took > 30*time.Second {
				t.Errorf("first daemon took %v to stop", took)
			}
			t.Logf("first daemon stopped in %v with %d LLM calls started", took.Round(time.Millisecond), started.Load())

			startDaemon(t, vars, roles{gateway: true, worker: true}, 5*time.Second)
			for i, at := range ts {
				waitAnswer(t, e.sim, ws, ws.GeneralChannelID, at, fmt.Sprintf("question %02d please", i), 45*time.Second)
			}
			// Nothing more arrives later: no duplicate, no leftover placeholder.
			time.Sleep(1500 * time.Millisecond)
			for i, at := range ts {
				v := e.sim.Thread(ws.TeamID, ws.GeneralChannelID, at)
				if !answered(v, fmt.Sprintf("question %02d please", i)) || len(v.Ephemerals) != 0 {
					t.Errorf("mention %d: thread %+v, ephemerals %v", i, v.Messages, v.Ephemerals)
				}
			}
			if n := e.sim.Unacked(); n != 0 {
				t.Errorf("%d envelopes never acked", n)
			}
		})
	}
}

// TestHealthReadinessMetrics: /healthz, /readyz with each workspace's
// socket state, and /metrics with the product's metrics and no tenant or
// team id among the label values.
func TestHealthReadinessMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{simOpts: []slacksim.Option{slacksim.WithAckTimeout(time.Second)}})
	tenantID, ws := e.seed("metrics")
	d := startDaemon(t, e.vars, roles{gateway: true, worker: true}, 5*time.Second)

	if code, body := d.get(t, "/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	var rd readiness
	waitFor(t, 10*time.Second, "/readyz 200 with both sockets up", func() bool {
		code, body := d.get(t, "/readyz")
		rd = readiness{}
		if err := json.Unmarshal([]byte(body), &rd); err != nil {
			t.Fatalf("/readyz body %q: %v", body, err)
		}
		if code != 200 && rd.Ready || code == 200 && !rd.Ready {
			t.Fatalf("/readyz %d with %s", code, body)
		}
		return code == 200 && len(rd.Workspaces) == 1 && rd.Workspaces[0].Connected == 2
	})
	if !rd.Ready || rd.Postgres != "ok" || rd.Redis != "ok" || len(rd.Workspaces) != 1 ||
		rd.Workspaces[0].TeamID != ws.TeamID || rd.Workspaces[0].Connected != 2 {
		t.Errorf("/readyz = %+v", rd)
	}

	ts, err := e.sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "count me", "")
	if err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, e.sim, ws, ws.GeneralChannelID, ts, "count me", 15*time.Second)

	// The reply is counted just after its final edit.
	var samples map[string][]sample
	waitFor(t, 5*time.Second, "konstruct_replies_total", func() bool {
		code, body := d.get(t, "/metrics")
		if code != 200 {
			t.Fatalf("/metrics = %d", code)
		}
		samples = parseMetrics(t, body)
		return len(samples["konstruct_replies_total"]) > 0
	})
	for _, name := range []string{
		"konstruct_envelopes_received_total", "konstruct_envelopes_acked_total", "konstruct_ack_latency_seconds_bucket",
		"konstruct_route_outcomes_total", "konstruct_tasks_enqueued_total", "konstruct_queue_latency_seconds_bucket",
		"konstruct_llm_time_to_first_token_seconds_bucket", "konstruct_llm_latency_seconds_bucket",
		"konstruct_slack_api_calls_total", "konstruct_sockets_connected", "konstruct_socket_reconnects_total",
		"konstruct_replies_total",
	} {
		if len(samples[name]) == 0 {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if v := samples["konstruct_sockets_connected"]; len(v) == 1 && v[0].value != 2 {
		t.Errorf("konstruct_sockets_connected = %v, want 2", v[0].value)
	}
	for name, ss := range samples {
		for _, s := range ss {
			for k, v := range s.labels {
				if strings.Contains(v, tenantID) || strings.Contains(v, ws.TeamID) || strings.Contains(v, ws.AppID) {
					t.Errorf("%s has label %s=%q: a tenant, team or app id", name, k, v)
				}
			}
		}
	}
}

type sample struct {
	labels map[string]string
	value  float64
}

var (
	sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
	labelRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// parseMetrics reads the Prometheus text format: name → samples.
func parseMetrics(t *testing.T, body string) map[string][]sample {
	t.Helper()
	out := map[string][]sample{}
	for line := range strings.SplitSeq(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("unparsable metrics line %q", line)
			continue
		}
		s := sample{labels: map[string]string{}}
		for _, l := range labelRE.FindAllStringSubmatch(m[2], -1) {
			s.labels[l[1]] = l[2]
		}
		_, _ = fmt.Sscan(m[3], &s.value)
		out[m[1]] = append(out[m[1]], s)
	}
	return out
}

// TestReadyzFollowsRedis: /readyz is 503 while Redis is down and 200 once
// it is back, without a restart.
func TestReadyzFollowsRedis(t *testing.T) {
	t.Parallel()
	rs := testenv.StartRedisServer(t)
	e := newEnv(t, envOpts{})
	_, ws := e.seed("ready")
	d := startDaemon(t, e.with("KONSTRUCT_REDIS_URL", rs.URL), roles{gateway: true, worker: true}, 2*time.Second)
	waitFor(t, 10*time.Second, "sockets", func() bool { return e.sim.Connections(ws.AppID) >= 2 })

	status := func() (int, readiness) {
		code, body := d.get(t, "/readyz")
		var rd readiness
		if err := json.Unmarshal([]byte(body), &rd); err != nil {
			t.Fatalf("/readyz body %q: %v", body, err)
		}
		return code, rd
	}
	waitFor(t, 10*time.Second, "ready", func() bool { c, _ := status(); return c == 200 })

	rs.Stop()
	waitFor(t, 10*time.Second, "/readyz 503 with Redis stopped", func() bool {
		c, rd := status()
		return c == 503 && !rd.Ready && rd.Redis == "unreachable" && rd.Postgres == "ok"
	})
	if code, _ := d.get(t, "/healthz"); code != 200 {
		t.Errorf("/healthz = %d while Redis is down: the process is alive", code)
	}

	rs.Start()
	waitFor(t, 15*time.Second, "/readyz 200 with Redis back", func() bool { c, _ := status(); return c == 200 })
}
