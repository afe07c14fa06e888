package hatest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/llm/llmfake"
	"github.com/konstruct/konstruct/slacksim"
)

// options of a run, from the environment (doc.go).
type options struct {
	workspaces int
	rate       int           // posts per second over all workspaces
	every      int           // every n-th post mentions the bot
	load       time.Duration // how long the load runs
	llm        time.Duration // the model's first-token delay
	killAt     time.Duration // into the load: SIGKILL of the `run` process
	failAt     time.Duration // into the load: the Redis master killed
	rejoinAt   time.Duration // into the load: the old master started again
	drain      time.Duration // bound on the wait for every answer after the load
	faults     bool          // the SIGKILL and the failover (off: a baseline, or a sizing run)
	roles      []string      // the daemons' commands; the first is the one killed
}

func optionsFromEnv(t *testing.T) options {
	o := options{workspaces: 12, rate: 30, every: 3, load: 60 * time.Second, llm: 200 * time.Millisecond, drain: 4 * time.Minute,
		faults: os.Getenv("KONSTRUCT_HA_FAULTS") != "off", roles: []string{"run", "gateway", "worker"}}
	if v := os.Getenv("KONSTRUCT_HA_ROLES"); v != "" {
		o.roles = strings.Split(v, ",")
		for _, r := range o.roles {
			if r != "run" && r != "gateway" && r != "worker" {
				t.Fatalf("KONSTRUCT_HA_ROLES=%q: each one run, gateway or worker", v)
			}
		}
	}
	num := func(name string, dst *int) {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				t.Fatalf("%s=%q: want a positive number", name, v)
			}
			*dst = n
		}
	}
	dur := func(name string, dst *time.Duration) {
		if v := os.Getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				t.Fatalf("%s=%q: want a duration such as 60s", name, v)
			}
			*dst = d
		}
	}
	num("KONSTRUCT_HA_WORKSPACES", &o.workspaces)
	num("KONSTRUCT_HA_RATE", &o.rate)
	num("KONSTRUCT_HA_EVERY", &o.every)
	dur("KONSTRUCT_HA_LOAD", &o.load)
	dur("KONSTRUCT_HA_LLM", &o.llm)
	o.killAt, o.failAt, o.rejoinAt = o.load/4, o.load/2, o.load*3/4
	return o
}

// Report is what a run saw; the JSON of KONSTRUCT_HA_REPORT.
type Report struct {
	Started    time.Time `json:"started"`
	Machine    string    `json:"machine"`
	Workspaces int       `json:"workspaces"`
	Rate       int       `json:"posts_per_s"`
	LoadS      float64   `json:"load_s"`
	LLMMillis  float64   `json:"llm_first_token_ms"`

	Mentions     int `json:"mentions"`
	AnsweredOnce int `json:"answered_once"`
	Duplicates   int `json:"duplicates"`
	Lost         int `json:"lost"`
	ErrorAnswers int `json:"error_answers"`
	Stuck        int `json:"stuck"`
	Chatter      int `json:"chatter"`
	ChatterAns   int `json:"chatter_answered"`
	Envelopes    int `json:"envelopes"`
	Unacked      int `json:"unacked"`
	Redelivered  int `json:"redelivered"`
	PeakSockets  int `json:"peak_sockets_per_app"`

	// Latency of the final answer (mention posted → last bot write), by
	// when the mention was posted.
	Latency map[string]Dist `json:"latency"`
	// LongestPause is the longest time without any bot write while the
	// load ran; the failover is in it.
	LongestPauseS float64 `json:"longest_pause_s"`
	// Failover: master killed → a new one named by the sentinels.
	FailoverS float64 `json:"failover_s"`
	// Sockets of the killed gateway's apps: kill → all of them held by the
	// survivors again (the other gateway already held a socket of each).
	Processes []Proc   `json:"processes"`
	Failures  []string `json:"failures,omitempty"`
	OutDir    string   `json:"out_dir"`
	ElapsedS  float64  `json:"elapsed_s"`
}

// Dist is a latency distribution in milliseconds.
type Dist struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	Max float64 `json:"max_ms"`
}

// Proc is one daemon's share of the work.
type Proc struct {
	Name      string  `json:"name"`
	Role      string  `json:"role"`
	Killed    bool    `json:"killed"`
	CPUS      float64 `json:"cpu_s"`
	PeakRSSMB float64 `json:"peak_rss_mib"`
	Acked     float64 `json:"envelopes_acked"`
	Replies   float64 `json:"replies"`
	ExitOK    bool    `json:"clean_exit"`
}

func (r Report) ok() bool {
	return r.Mentions > 0 && r.AnsweredOnce == r.Mentions && r.Duplicates == 0 && r.Lost == 0 && r.Stuck == 0 &&
		r.ChatterAns == 0 && r.Unacked == 0 && r.PeakSockets <= 10
}

const answerMarker = "[ha-answer "

var questionID = regexp.MustCompile(`q-\d+`)

// TestHA: three processes under load share the work; one is SIGKILLed,
// then the Redis master is killed and Sentinel fails it over: 0 lost, 0
// duplicates, 0 stuck.
func TestHA(t *testing.T) {
	if os.Getenv("KONSTRUCT_TEST_HA") == "" {
		t.Skip("make test-ha runs this (KONSTRUCT_TEST_HA=1): minutes of load on three daemons and a Sentinel deployment")
	}
	o := optionsFromEnv(t)
	h := &harness{t: t, o: o, rep: Report{Started: time.Now(), Workspaces: o.workspaces, Rate: o.rate,
		LoadS: o.load.Seconds(), LLMMillis: float64(o.llm.Milliseconds()), Machine: machine()}}
	h.run()
}

type harness struct {
	t   *testing.T
	o   options
	rep Report

	bin     string
	out     string
	sim     *slacksim.Server
	llm     *llmfake.Server
	sent    *testenv.Sentinel
	ws      []slacksim.WorkspaceSpec
	env     []string
	procs   []*daemon
	loadT0  time.Time
	botMu   sync.Mutex
	bots    []time.Time // every bot write while the load runs
	lastBot map[string]time.Time

	mu       sync.Mutex
	mentions []*mention
	chatter  []*mention
	peak     int
}

type mention struct {
	id                string
	team, channel, ts string
	at                time.Time
	window            string
}

func (h *harness) logf(format string, args ...any) {
	h.t.Helper()
	at := ""
	if !h.loadT0.IsZero() {
		at = fmt.Sprintf("[+%5.1fs] ", time.Since(h.loadT0).Seconds())
	}
	h.t.Logf(at+format, args...)
}

func (h *harness) run() {
	t := h.t
	var err error
	if h.out, err = os.MkdirTemp("", "konstruct-ha-"); err != nil {
		t.Fatal(err)
	}
	h.rep.OutDir = h.out
	h.bin = binary(t)

	// Postgres: a database of the test's own. Redis: behind Sentinel.
	pg := testenv.NewPG(t)
	h.sent = testenv.StartSentinel(t, testenv.SentinelOptions{Replicas: 2, DownAfter: time.Second})
	// Slack and the model.
	h.sim = slacksim.New(slacksim.WithRateLimits(false), slacksim.WithAckTimeout(3*time.Second))
	if err := h.sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.sim.Close() })
	h.llm = llmfake.New(llmfake.WithHandler(func(req llmfake.ChatRequest) llmfake.Reply {
		id := questionID.FindString(req.LastUser())
		return llmfake.Reply{Text: "Here is the answer you asked for. " + answerMarker + id + "]",
			FirstTokenDelay: h.o.llm, TokenDelay: 5 * time.Millisecond}
	}))
	t.Cleanup(h.llm.Close)
	h.lastBot = map[string]time.Time{}
	h.sim.OnBotMessage(func(team, channel, threadTS, _, _ string, at time.Time) {
		h.botMu.Lock()
		defer h.botMu.Unlock()
		h.lastBot[team+"|"+channel+"|"+threadTS] = at
		if !h.loadT0.IsZero() {
			h.bots = append(h.bots, at)
		}
	})

	// The daemons' configuration: what an operator sets, and Slack budgets
	// raised (slacksim's limits are off; the budgets are not what this
	// measures).
	cfgFile := filepath.Join(h.out, "konstruct.yaml")
	var budgets strings.Builder
	budgets.WriteString("slack:\n  rate_limits:\n")
	for _, m := range []string{"chat.postMessage", "chat.update", "chat.delete", "chat.postEphemeral", "conversations.replies"} {
		fmt.Fprintf(&budgets, "    - {method: %s, per_minute: 100000, burst: 1000}\n", m)
	}
	if err := os.WriteFile(cfgFile, []byte(budgets.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	h.env = append(baseEnv(),
		"KONSTRUCT_CONFIG="+cfgFile,
		"KONSTRUCT_DATABASE_URL="+pg.RuntimeURL,
		"KONSTRUCT_DATABASE_MIGRATE_URL="+pg.OwnerURL,
		"KONSTRUCT_REDIS_SENTINEL_MASTER="+testenv.SentinelMaster,
		"KONSTRUCT_REDIS_SENTINEL_ADDRS="+strings.Join(h.sent.Addrs, ","),
		"KONSTRUCT_REDIS_PREFIX=ha:"+strconv.FormatInt(time.Now().UnixNano()%1e9, 36)+":",
		"KONSTRUCT_SLACK_API_URL="+h.sim.APIURL(),
		"KONSTRUCT_LLM_BASE_URL="+h.llm.URL(),
		"KONSTRUCT_LLM_MODEL=fake-model",
		"KONSTRUCT_SECRET_KEY="+testenv.SecretKey(),
		"KONSTRUCT_RATELIMIT_PER_MINUTE=100000",
		"KONSTRUCT_RATELIMIT_PER_USER_PER_MINUTE=100000",
		"KONSTRUCT_WORKER_CONCURRENCY=16",
		"KONSTRUCT_LOG_FORMAT=json",
	)
	h.seed()

	// Three processes: both halves in one, and the halves apart.
	for i, role := range h.o.roles {
		h.procs = append(h.procs, h.start(fmt.Sprintf("p%d", i+1), role))
	}
	t.Cleanup(func() {
		for _, p := range h.procs {
			p.kill()
		}
	})
	h.waitSockets(60*time.Second, 2)
	for _, p := range h.procs {
		p.waitReady(t, 60*time.Second)
	}
	h.logf("%d daemons up (%s); %d workspaces", len(h.procs), strings.Join(h.o.roles, ", "), len(h.ws))

	// The load, the sampler, and the timeline.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var bg sync.WaitGroup
	bg.Go(func() { h.sampleSockets(ctx) })
	h.loadT0 = time.Now()
	loadDone := make(chan struct{})
	bg.Go(func() { h.drive(ctx, loadDone) })
	if h.o.faults {
		h.timeline()
	}
	<-loadDone
	loadEnd := time.Now()
	h.logf("load over: %d mentions, %d chatter posts; waiting up to %v for every answer", len(h.mentions), len(h.chatter), h.o.drain)

	left := h.waitAnswered(time.Now().Add(h.o.drain))
	h.logf("%d mentions without their answer after the drain", left)
	h.waitNotStuck(time.Now().Add(30 * time.Second))
	time.Sleep(max(3*time.Second, 4*h.o.llm)) // a duplicate would show by now
	stop()
	bg.Wait()
	h.check(loadEnd)
	h.finish()
}

// seed creates the tenants, agents and workspaces with the CLI, as an
// operator does (three workspaces per tenant; a few commands at once).
func (h *harness) seed() {
	for range h.o.workspaces {
		h.ws = append(h.ws, h.sim.AddWorkspace(slacksim.WorkspaceSpec{}))
	}
	for i := 0; i < h.o.workspaces; i += 3 {
		slug := fmt.Sprintf("t%d", i/3)
		h.cli("tenant", "create", "--name", "Tenant "+slug, "--slug", slug)
		h.cli("agent", "set", "--tenant", slug, "--name", "Mara", "--role", "Support", "--persona", "Brief.")
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, w := range h.ws {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			h.cliEnv([]string{"SLACK_APP_TOKEN=" + w.AppToken, "SLACK_BOT_TOKEN=" + w.BotToken},
				"workspace", "add", "--tenant", fmt.Sprintf("t%d", i/3))
		})
	}
	wg.Wait()
}

func (h *harness) cli(args ...string) string { return h.cliEnv(nil, args...) }

func (h *harness) cliEnv(extra []string, args ...string) string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = append(slices.Clone(h.env), extra...)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		h.t.Errorf("konstruct %s: %v: %s", strings.Join(args[:2], " "), err, stderr)
		runtime.Goexit()
	}
	return strings.TrimSpace(string(out))
}

// daemon is one konstruct process.
type daemon struct {
	name, role string
	addr       string
	cmd        *exec.Cmd
	done       chan struct{}
	err        error
	killed     bool
	cpu        float64 // seconds, read before it ends
	hwm        float64 // MiB
	acked      float64
	replies    float64
}

func (h *harness) start(name, role string) *daemon {
	t := h.t
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	state := filepath.Join(h.out, name+"-state")
	logf, err := os.Create(filepath.Join(h.out, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(h.bin, role) //nolint:noctx // stopped by the harness, SIGTERM first
	cmd.Env = append(slices.Clone(h.env), "KONSTRUCT_HTTP_ADDR="+addr, "KONSTRUCT_STATE_DIR="+state)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{name: name, role: role, addr: addr, cmd: cmd, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		_ = logf.Close()
		close(d.done)
	}()
	return d
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// observe reads its CPU time, peak RSS and counters while it runs.
func (d *daemon) observe() {
	if d.exited() {
		return
	}
	pid := d.cmd.Process.Pid
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 12 {
			ut, _ := strconv.ParseFloat(f[11], 64)
			st, _ := strconv.ParseFloat(f[12], 64)
			d.cpu = (ut + st) / 100 // USER_HZ
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
				d.hwm = kb / 1024
			}
		}
	}
	if m, err := scrape(d.addr); err == nil {
		d.acked = m["konstruct_envelopes_acked_total"]
		d.replies = m["konstruct_replies_total"]
	}
}

func (d *daemon) kill() {
	if d.exited() {
		return
	}
	_ = d.cmd.Process.Kill()
	<-d.done
}

// stop sends SIGTERM and reports whether it exited 0 within 30 s.
func (d *daemon) stop() bool {
	if d.exited() {
		return false
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return d.err == nil
	case <-time.After(30 * time.Second):
		d.kill()
		return false
	}
}

func (d *daemon) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get("http://" + d.addr + "/readyz") //nolint:noctx // a short poll
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if d.exited() {
			t.Fatalf("%s (%s) exited: %v", d.name, d.role, d.err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (%s) not ready after %v", d.name, d.role, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scrape reads a daemon's /metrics, each metric summed over its labels.
func scrape(addr string) (map[string]float64, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics") //nolint:noctx // bounded by the client
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if i := strings.IndexByte(name, '{'); i >= 0 {
			if j := strings.LastIndexByte(line, '}'); j > 0 {
				rest = strings.TrimSpace(line[j+1:])
			}
			name = name[:i]
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err == nil {
			out[name] += v
		}
	}
	return out, sc.Err()
}

// waitSockets waits until every app has at least n sockets.
func (h *harness) waitSockets(timeout time.Duration, n int) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for _, w := range h.ws {
			if h.sim.Connections(w.AppID) < n {
				ok = false
				break
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the apps did not get %d sockets each within %v", n, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *harness) sampleSockets(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, w := range h.ws {
			n := h.sim.Connections(w.AppID)
			h.mu.Lock()
			h.peak = max(h.peak, n)
			h.mu.Unlock()
		}
	}
}

// window names the part of the timeline a post falls in.
func (h *harness) window(at time.Time) string {
	d := at.Sub(h.loadT0)
	switch {
	case !h.o.faults:
		return "steady"
	case d < h.o.killAt:
		return "steady"
	case d < h.o.failAt:
		return "after the SIGKILL"
	case d < h.o.failAt+10*time.Second:
		return "failover (10 s)"
	default:
		return "after the failover"
	}
}

// drive posts at the rate for the load's length: round robin over the
// workspaces, every `every`-th post a mention, the others chatter.
func (h *harness) drive(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	interval := time.Second / time.Duration(h.o.rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	end := h.loadT0.Add(h.o.load)
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if now.After(end) {
				return
			}
		}
		w := h.ws[i%len(h.ws)]
		user := w.UserIDs[(i/len(h.ws))%len(w.UserIDs)]
		at := time.Now()
		if (i/len(h.ws)+i)%h.o.every == 0 {
			id := fmt.Sprintf("q-%d", i)
			ts, err := h.sim.Mention(w.TeamID, w.GeneralChannelID, user, "question "+id+": how do I reset my password?", "")
			if err != nil {
				h.t.Errorf("post a mention: %v", err)
				return
			}
			h.mu.Lock()
			h.mentions = append(h.mentions, &mention{id: id, team: w.TeamID, channel: w.GeneralChannelID, ts: ts, at: at, window: h.window(at)})
			h.mu.Unlock()
			continue
		}
		ts, err := h.sim.Post(w.TeamID, w.GeneralChannelID, user, fmt.Sprintf("chatter %d", i), "")
		if err != nil {
			h.t.Errorf("post chatter: %v", err)
			return
		}
		h.mu.Lock()
		h.chatter = append(h.chatter, &mention{team: w.TeamID, channel: w.GeneralChannelID, ts: ts, at: at})
		h.mu.Unlock()
	}
}

// timeline: the `run` process SIGKILLed; the Redis master killed and
// failed over; the old master back (as a replica).
func (h *harness) timeline() {
	until := func(d time.Duration) { time.Sleep(time.Until(h.loadT0.Add(d))) }
	until(h.o.killAt)
	p1 := h.procs[0]
	p1.observe()
	p1.kill()
	p1.killed = true
	h.logf("SIGKILL %s (%s): its sockets, its records and its replies are left to the others", p1.name, p1.role)

	until(h.o.failAt)
	old := h.sent.MasterAddr()
	killed := h.sent.KillMaster()
	start := time.Now()
	now := h.sent.WaitFailover(old, 60*time.Second)
	h.rep.FailoverS = round(time.Since(start).Seconds(), 2)
	h.logf("Redis master %s killed; the sentinels promoted %s after %.2fs", old, now, h.rep.FailoverS)

	until(h.o.rejoinAt)
	killed.Start()
	h.logf("the old master %s started again (it rejoins as a replica)", killed.Addr)
}

// answered reports whether a mention's thread shows its final answer.
func (h *harness) answered(m *mention) bool {
	for _, b := range h.sim.Thread(m.team, m.channel, m.ts).BotReplies() {
		if !b.Streaming && strings.Contains(b.Text, answerMarker+m.id+"]") {
			return true
		}
	}
	return false
}

func (h *harness) waitAnswered(deadline time.Time) int {
	h.mu.Lock()
	pending := slices.Clone(h.mentions)
	h.mu.Unlock()
	for {
		left := pending[:0]
		for _, m := range pending {
			if !h.answered(m) {
				left = append(left, m)
			}
		}
		pending = left
		if len(pending) == 0 || time.Now().After(deadline) {
			return len(pending)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func stuck(m slacksim.ViewMessage) bool {
	return m.IsBot && (m.Streaming || konstruct.IsPlaceholder(strings.TrimSpace(m.Text)))
}

func (h *harness) waitNotStuck(deadline time.Time) {
	for time.Now().Before(deadline) {
		n := 0
		for _, m := range h.mentions {
			for _, b := range h.sim.Thread(m.team, m.channel, m.ts).Messages {
				if stuck(b) {
					n++
				}
			}
		}
		if n == 0 {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// check reads every thread and envelope into the report.
func (h *harness) check(loadEnd time.Time) {
	rep := &h.rep
	fail := func(format string, args ...any) {
		if len(rep.Failures) < 12 {
			rep.Failures = append(rep.Failures, fmt.Sprintf(format, args...))
		}
	}
	lat := map[string][]float64{}
	for _, m := range h.mentions {
		rep.Mentions++
		bots := h.sim.Thread(m.team, m.channel, m.ts).BotReplies()
		final, other := 0, ""
		for _, b := range bots {
			switch {
			case stuck(b):
				rep.Stuck++
				fail("stuck: %s %s %s: %q", m.team, m.channel, m.ts, b.Text)
			case strings.Contains(b.Text, answerMarker+m.id+"]"):
				final++
			default:
				other = b.Text
			}
		}
		switch {
		case len(bots) == 1 && final == 1:
			rep.AnsweredOnce++
		case len(bots) > 1:
			rep.Duplicates++
			fail("duplicate: %s %s %s (%s): %d bot messages", m.team, m.channel, m.ts, m.window, len(bots))
		}
		if final == 0 {
			rep.Lost++
			if other != "" {
				rep.ErrorAnswers++
			}
			fail("lost: %s %s %s (%s), asked at +%.1fs: %d bot messages %q", m.team, m.channel, m.ts, m.window, m.at.Sub(h.loadT0).Seconds(), len(bots), other)
			continue
		}
		h.botMu.Lock()
		last := h.lastBot[m.team+"|"+m.channel+"|"+m.ts]
		h.botMu.Unlock()
		if !last.IsZero() {
			ms := float64(last.Sub(m.at).Microseconds()) / 1000
			lat[m.window] = append(lat[m.window], ms)
			lat["all"] = append(lat["all"], ms)
		}
	}
	rep.Latency = map[string]Dist{}
	for w, xs := range lat {
		rep.Latency[w] = dist(xs)
	}
	for _, c := range h.chatter {
		rep.Chatter++
		if bots := h.sim.Thread(c.team, c.channel, c.ts).BotReplies(); len(bots) > 0 {
			rep.ChatterAns++
			fail("chatter answered: %s %s %s", c.team, c.channel, c.ts)
		}
	}
	for _, e := range h.sim.Envelopes() {
		rep.Envelopes++
		if e.Acked.IsZero() {
			rep.Unacked++
		}
		if e.Retries > 0 {
			rep.Redelivered++
		}
	}
	h.mu.Lock()
	rep.PeakSockets = h.peak
	h.mu.Unlock()
	// The longest stretch without a bot write while the load ran.
	h.botMu.Lock()
	ws := slices.Clone(h.bots)
	h.botMu.Unlock()
	slices.SortFunc(ws, func(a, b time.Time) int { return a.Compare(b) })
	prev := h.loadT0
	for _, at := range ws {
		if at.After(loadEnd) {
			break
		}
		rep.LongestPauseS = max(rep.LongestPauseS, round(at.Sub(prev).Seconds(), 2))
		prev = at
	}
}

// finish stops the survivors (SIGTERM: exit 0 within 30 s), prints the
// report and fails the test if the goal was missed.
func (h *harness) finish() {
	t, rep := h.t, &h.rep
	for _, p := range h.procs {
		p.observe()
	}
	for _, p := range h.procs {
		ok := false
		if !p.killed {
			ok = p.stop()
			if !ok {
				t.Errorf("%s (%s) did not exit 0 within 30 s of SIGTERM: %v", p.name, p.role, p.err)
			}
		}
		rep.Processes = append(rep.Processes, Proc{Name: p.name, Role: p.role, Killed: p.killed, CPUS: round(p.cpu, 1),
			PeakRSSMB: round(p.hwm, 1), Acked: p.acked, Replies: p.replies, ExitOK: ok})
	}
	rep.ElapsedS = round(time.Since(rep.Started).Seconds(), 1)
	var b strings.Builder
	fmt.Fprintf(&b, "HA run: %s; %d workspaces, %d posts/s (every %d-th a mention), %v of load, LLM first token %v, faults %v\n",
		strings.Join(h.o.roles, " + "), rep.Workspaces, rep.Rate, h.o.every, h.o.load, h.o.llm, h.o.faults)
	fmt.Fprintf(&b, "  mentions %d: answered once %d, duplicates %d, lost %d (error texts %d), stuck %d\n",
		rep.Mentions, rep.AnsweredOnce, rep.Duplicates, rep.Lost, rep.ErrorAnswers, rep.Stuck)
	fmt.Fprintf(&b, "  chatter %d: answered %d; envelopes %d: unacked %d, redelivered %d; peak sockets per app %d (Slack allows 10)\n",
		rep.Chatter, rep.ChatterAns, rep.Envelopes, rep.Unacked, rep.Redelivered, rep.PeakSockets)
	fmt.Fprintf(&b, "  Sentinel failover %.2fs; longest pause in bot writes %.2fs\n", rep.FailoverS, rep.LongestPauseS)
	fmt.Fprintf(&b, "  answer latency (mention → final answer, LLM included):\n")
	for _, w := range []string{"steady", "after the SIGKILL", "failover (10 s)", "after the failover", "all"} {
		if d, ok := rep.Latency[w]; ok {
			fmt.Fprintf(&b, "    %-20s n %4d  p50 %7.0f ms  p95 %7.0f ms  max %7.0f ms\n", w, d.N, d.P50, d.P95, d.Max)
		}
	}
	for _, p := range rep.Processes {
		fmt.Fprintf(&b, "  %s %-8s cpu %5.1fs  peak RSS %6.1f MiB  acked %6.0f  replies %5.0f  killed %v  clean exit %v\n",
			p.Name, p.Role, p.CPUS, p.PeakRSSMB, p.Acked, p.Replies, p.Killed, p.ExitOK)
	}
	for _, f := range rep.Failures {
		fmt.Fprintf(&b, "  ! %s\n", f)
	}
	fmt.Fprintf(&b, "  logs: %s; %.0fs in all\n", rep.OutDir, rep.ElapsedS)
	t.Log("\n" + b.String())
	js, _ := json.Marshal(rep)
	t.Log(string(js))
	if f := os.Getenv("KONSTRUCT_HA_REPORT"); f != "" {
		if err := os.WriteFile(f, append(js, '\n'), 0o644); err != nil {
			t.Errorf("write the report: %v", err)
		}
	}
	if !rep.ok() {
		t.Errorf("HA goal missed: %d of %d mentions answered once, %d duplicates, %d lost, %d stuck, %d chatter answered, %d unacked, peak %d sockets per app",
			rep.AnsweredOnce, rep.Mentions, rep.Duplicates, rep.Lost, rep.Stuck, rep.ChatterAns, rep.Unacked, rep.PeakSockets)
	}
}

func dist(xs []float64) Dist {
	if len(xs) == 0 {
		return Dist{}
	}
	slices.Sort(xs)
	at := func(q float64) float64 { return round(xs[min(len(xs)-1, int(q*float64(len(xs))))], 1) }
	return Dist{N: len(xs), P50: at(0.5), P95: at(0.95), Max: round(xs[len(xs)-1], 1)}
}

func round(f float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	return float64(int64(f*p+0.5)) / p
}

func machine() string {
	return fmt.Sprintf("%d CPUs, %s, %s/%s", runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// baseEnv is the environment without the caller's KONSTRUCT_ and SLACK_
// variables: the daemons get only what the harness sets.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KONSTRUCT_") && !strings.HasPrefix(kv, "SLACK_") {
			env = append(env, kv)
		}
	}
	return env
}

// binary is $KONSTRUCT_TEST_BINARY, else cmd/konstruct built into a
// temporary directory (without the race detector: the daemons are what
// is measured).
func binary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("KONSTRUCT_TEST_BINARY"); b != "" {
		return b
	}
	out := filepath.Join(t.TempDir(), "konstruct")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", out, "../../cmd/konstruct")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}
