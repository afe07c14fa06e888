package bench

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/konstruct/konstruct/llm/llmfake"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/slacksim"
	"github.com/konstruct/konstruct/store"
)

// answerMarker ends every fake answer: a thread shows its final answer when
// a bot message contains it.
const answerMarker = "bench-answer-complete"

// connectionsPerWorkspace is the daemon's slack.connections_per_workspace.
const connectionsPerWorkspace = 2

// Bounds on a daemon's start (every socket open) and graceful stop.
const (
	daemonStartBound = 120 * time.Second
	daemonStopGrace  = 30 * time.Second
)

type runner struct {
	o   Options
	rep Report
	log func(format string, args ...any)

	sim     *slacksim.Server
	fake    *llmfake.Server
	llmTime time.Duration
	rdb     *redis.Client
	prefix  string
	env     []string // the CLI's and the daemon's environment

	// simOpts configure the emulator (default: rate limits and bot echo off).
	simOpts []slacksim.Option
	// extDB is a database made elsewhere (Database); nil: the run provisions its own.
	extDB  *Database
	dbName string
	// privateRedis: Options.RedisURL is the run's own server, whose keys
	// need no cleaning.
	privateRedis bool

	konWS     []slacksim.WorkspaceSpec // the ack and pipeline phases' workspaces
	allWS     []slacksim.WorkspaceSpec // every workspace the daemon serves
	daemon    *process
	httpAddr  string
	pprofAddr string
	logFile   *os.File

	cur atomic.Pointer[ackRec]

	botMu   sync.Mutex
	threads map[string]*threadRec

	mentMu   sync.Mutex
	mentions []*mention

	cleanups []func()
}

func newRunner(o Options) *runner {
	r := &runner{o: o, threads: map[string]*threadRec{}}
	start := time.Now()
	r.log = func(format string, args ...any) {
		fmt.Fprintf(o.Progress, "bench [%5.1fs] "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
	}
	return r
}

func (r *runner) defer_(f func()) { r.cleanups = append(r.cleanups, f) }

func (r *runner) cleanup() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func (r *runner) run(ctx context.Context) (Report, error) {
	o := r.o
	r.rep = Report{Started: time.Now(), OutDir: o.OutDir, Machine: machine()}
	r.rep.Setup = Setup{Workspaces: o.Workspaces, Tenants: (o.Workspaces + 4) / 5, PhaseSeconds: o.Phase.Seconds(), MentionShare: o.MentionShare}
	defer r.cleanup()

	if o.LimitsOnly {
		r.rep.LimitsOnly = true
		r.limits(ctx)
		return r.rep, ctx.Err()
	}
	if err := r.setup(ctx); err != nil {
		return r.rep, err
	}
	kon, err := r.seedAndStart(ctx)
	if err != nil {
		return r.rep, err
	}

	// 1. Ack latency at each rate, konstruct.
	r.rep.Ack = append(r.rep.Ack, r.ackPhases(ctx, kon, true)...)

	// A separate phase for the CPU profile, so that profiling never
	// weighs on the figures above.
	if o.Profile {
		rate := o.Rates[0]
		for _, x := range o.Rates {
			if x <= 2000 {
				rate = max(rate, x)
			}
		}
		r.log("profiling the daemon at %d env/s for %v", rate, o.Phase)
		prof := r.profile("ack", o.Phase)
		res := r.drive(ctx, drive{tgt: kon, phase: "profile", rate: rate, dur: o.Phase, mentionEvery: every(o.MentionShare)})
		prof()
		r.waitAnswered(ctx, res.mentions, time.Now().Add(o.Drain))
	}

	// 2. Feedback and overhead at a moderate rate.
	r.log("pipeline phase: %d mentions/s for %v", o.PipelineRate, o.Phase)
	// Spread over the step workspaces: per workspace, answers stay far
	// below the worker's chat.update budget, so this is the pipeline's own time.
	spread := newTarget("konstruct", r.allWS[:r.rep.Setup.StepWorkspaces])
	pres := r.drive(ctx, drive{tgt: spread, phase: "pipeline", rate: 2 * o.PipelineRate, dur: o.Phase, mentionEvery: 1})
	if left := r.waitAnswered(ctx, pres.mentions, time.Now().Add(o.Drain)); left > 0 {
		r.log("pipeline phase: %d of %d mentions unanswered after %v", left, len(pres.mentions), o.Drain)
	}
	time.Sleep(100 * time.Millisecond)
	fb, ov, _ := r.latencies(pres.mentions)
	r.rep.Feedback, r.rep.Overhead = distOf(fb), distOf(ov)

	// 3. The highest answered rate that keeps the ack p99 under 5 ms.
	r.steps(ctx, spread)

	// Every answer of the load daemon, then a grace period in which a
	// duplicate would show up.
	r.mentMu.Lock()
	all := append([]*mention(nil), r.mentions...)
	r.mentMu.Unlock()
	r.waitAnswered(ctx, all, time.Now().Add(o.Drain))
	time.Sleep(max(time.Second, 2*r.llmTime))
	r.integrity(all)
	r.rep.DaemonPeakRSS, _ = procMemory(r.daemon.pid())
	r.rep.DaemonCPUSeconds = procCPU(r.daemon.pid()).Round(10 * time.Millisecond).Seconds()
	r.log("load daemon: peak RSS %.1f MiB, %.1f s CPU", r.rep.DaemonPeakRSS, r.rep.DaemonCPUSeconds)
	if err := r.daemon.stop(30 * time.Second); err != nil {
		r.log("daemon stop: %v", err)
	}

	// 4. The ack with the intake's durable write, Redis answering and
	// stopped (a daemon of its own on a private redis-server).
	if !o.SkipDurable {
		r.durable(ctx)
	}

	// 5. References on the same emulator, under the same load.
	r.slackGo(ctx)
	if o.SkipBolt {
		r.rep.BoltSkipped = "--skip-bolt"
	} else {
		r.bolt(ctx)
	}

	// 6. Socket scale with a fresh daemon.
	if !o.SkipSockets {
		r.sockets(ctx)
	}

	// 7. Slack's limits enforced: a realistic load, a burst into one
	// workspace, two workers sharing its budget, noisy neighbours (an
	// emulator, database and daemons of their own).
	if !o.SkipLimits {
		r.limits(ctx)
	}
	return r.rep, ctx.Err()
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == "MemTotal" {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				m.MemTotal = fmt.Sprintf("%.1f GiB", kb/1024/1024)
			}
		}
		f.Close()
	}
	return m
}

// setup starts the emulator and the fake LLM, measures Redis, creates the
// database and migrates it with the real binary.
func (r *runner) setup(ctx context.Context) error {
	o := r.o
	simOpts := r.simOpts
	if simOpts == nil {
		simOpts = []slacksim.Option{slacksim.WithRateLimits(false), slacksim.WithBotEcho(false)}
	}
	r.sim = slacksim.New(simOpts...)
	if err := r.sim.Start("127.0.0.1:0"); err != nil {
		return fmt.Errorf("start slacksim: %w", err)
	}
	r.defer_(func() { _ = r.sim.Close() })
	r.sim.OnAck(func(st slacksim.EnvelopeStat) {
		rec := r.cur.Load()
		if rec == nil || !rec.apps[st.AppID] {
			return
		}
		rec.mu.Lock()
		rec.lat = append(rec.lat, st.Acked.Sub(st.Sent))
		if st.Retries > 0 {
			rec.redel++
		}
		rec.mu.Unlock()
	})
	r.sim.OnBotMessage(func(team, channel, threadTS, _, _ string, at time.Time) {
		if threadTS == "" {
			return
		}
		k := threadKey(team, channel, threadTS)
		r.botMu.Lock()
		t := r.threads[k]
		if t == nil {
			t = &threadRec{first: at}
			r.threads[k] = t
		}
		if at.Before(t.first) {
			t.first = at
		}
		if at.After(t.last) {
			t.last = at
		}
		t.writes++
		r.botMu.Unlock()
	})

	// The fake LLM: a fixed answer, so its own time is known exactly.
	words := make([]string, 0, o.AnswerWords)
	for i := range o.AnswerWords - 1 {
		words = append(words, fmt.Sprintf("word%d ", i+1))
	}
	chunks := append(words, answerMarker)
	r.llmTime = o.LLMFirstToken + time.Duration(len(chunks)-1)*o.LLMTokenDelay
	r.rep.Setup.LLMMillis = ms(r.llmTime)
	r.fake = llmfake.New(llmfake.WithoutRecording(), llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply {
		return llmfake.Reply{Chunks: chunks, FirstTokenDelay: o.LLMFirstToken, TokenDelay: o.LLMTokenDelay}
	}))
	r.defer_(r.fake.Close)

	// Redis: the reference round trip, and the run's private prefix.
	ropt, err := redis.ParseURL(o.RedisURL)
	if err != nil {
		return fmt.Errorf("redis url: %w", err)
	}
	r.rdb = redis.NewClient(ropt)
	r.defer_(func() { _ = r.rdb.Close() })
	r.prefix = "bench:" + randomHex(4) + ":"
	r.defer_(func() {
		if r.privateRedis {
			return // nobody else's: it goes with the run
		}
		cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		q, err := queue.Open(queue.Config{URL: o.RedisURL, Prefix: r.prefix})
		if err == nil {
			err = q.Purge(cctx)
			_ = q.Close()
		}
		if err != nil {
			r.log("clean Redis prefix %s: %v", r.prefix, err)
		}
	})
	pings := make([]time.Duration, 0, 2000)
	for range 2000 {
		t := time.Now()
		if err := r.rdb.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("redis ping (is Redis running? `make services`): %w", err)
		}
		pings = append(pings, time.Since(t))
	}
	r.rep.RedisPing = distOf(pings)

	// The database, migrated by the binary as its owner.
	db := r.extDB
	if db == nil {
		pdb, err := store.Provision(ctx, o.AdminURL, "konstruct_bench_"+randomHex(4))
		if err != nil {
			return fmt.Errorf("create the benchmark database: %w", err)
		}
		r.defer_(func() {
			cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := pdb.Drop(cctx); err != nil {
				r.log("drop database %s: %v", pdb.Name, err)
			}
		})
		db = &Database{OwnerURL: pdb.OwnerURL, RuntimeURL: pdb.RuntimeURL}
		r.dbName = pdb.Name
	}
	cfgPath := filepath.Join(o.OutDir, "konstruct.yaml")
	if err := os.WriteFile(cfgPath, []byte("# konstruct bench: everything comes from KONSTRUCT_* variables\nlog:\n  format: json\n"), 0o600); err != nil {
		return err
	}
	if r.httpAddr, err = freeAddr(); err != nil {
		return err
	}
	r.env = append(baseEnv(),
		"KONSTRUCT_CONFIG="+cfgPath,
		"KONSTRUCT_DATABASE_URL="+db.RuntimeURL,
		"KONSTRUCT_DATABASE_MIGRATE_URL="+db.OwnerURL,
		"KONSTRUCT_REDIS_URL="+o.RedisURL,
		"KONSTRUCT_REDIS_PREFIX="+r.prefix,
		"KONSTRUCT_SLACK_API_URL="+r.sim.APIURL(),
		"KONSTRUCT_SLACK_CONNECTIONS_PER_WORKSPACE="+strconv.Itoa(connectionsPerWorkspace),
		"KONSTRUCT_LLM_BASE_URL="+r.fake.URL(),
		"KONSTRUCT_LLM_MODEL=bench-model",
		"KONSTRUCT_SECRET_KEY="+newSecretKey(),
		"KONSTRUCT_HTTP_ADDR="+r.httpAddr,
		"KONSTRUCT_STATE_DIR="+filepath.Join(o.OutDir, "state"),
		"KONSTRUCT_RATELIMIT_PER_MINUTE=10000000",
		"KONSTRUCT_RATELIMIT_PER_USER_PER_MINUTE=10000000",
		"KONSTRUCT_WORKER_CONCURRENCY="+strconv.Itoa(o.WorkerConcurrency),
		"KONSTRUCT_LOG_FORMAT=json",
		"KONSTRUCT_LOG_LEVEL=warn",
	)
	if _, err := runCLI(ctx, o.Binary, r.env, "migrate"); err != nil {
		return err
	}
	lf, err := os.Create(filepath.Join(o.OutDir, "daemon.log"))
	if err != nil {
		return err
	}
	r.logFile = lf
	r.defer_(func() { _ = lf.Close() })
	r.log("slacksim %s, fake LLM %s (%v per answer), database %s, Redis prefix %s, logs in %s",
		r.sim.URL(), r.fake.URL(), r.llmTime, cmp.Or(r.dbName, "(given)"), r.prefix, o.OutDir)
	return nil
}

// seed creates n workspaces in the emulator and registers them with the
// real CLI: one tenant (and agent) per perTenant workspaces.
func (r *runner) seed(ctx context.Context, n, perTenant int, slugPrefix string) ([]slacksim.WorkspaceSpec, error) {
	return r.seedAs(ctx, n, perTenant, slugPrefix, benchPersona)
}

// benchPersona is the agents' persona unless a phase needs another (the
// fake LLM reads it in the system prompt: a tenant on a slow model).
const benchPersona = "Concise and practical."

// seedAs is seed with the agents' persona.
func (r *runner) seedAs(ctx context.Context, n, perTenant int, slugPrefix, persona string) ([]slacksim.WorkspaceSpec, error) {
	ws := make([]slacksim.WorkspaceSpec, n)
	for i := range ws {
		ws[i] = r.sim.AddWorkspace(slacksim.WorkspaceSpec{TeamName: fmt.Sprintf("Bench %s%d", slugPrefix, i)})
	}
	tenants := (n + perTenant - 1) / perTenant
	par := 2 * runtime.NumCPU()
	each := func(count int, f func(i int) error) error {
		sem := make(chan struct{}, par)
		var mu sync.Mutex
		var first error
		var wg sync.WaitGroup
		for i := range count {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if err := f(i); err != nil {
					mu.Lock()
					first = errors.Join(first, err)
					mu.Unlock()
				}
			})
			mu.Lock()
			stop := first != nil
			mu.Unlock()
			if stop || ctx.Err() != nil {
				break
			}
		}
		wg.Wait()
		return first
	}
	slug := func(i int) string { return fmt.Sprintf("bench-%s%d", slugPrefix, i) }
	if err := each(tenants, func(i int) error {
		if _, err := runCLI(ctx, r.o.Binary, r.env, "tenant", "create", "--name", "Bench "+slug(i), "--slug", slug(i)); err != nil {
			return err
		}
		_, err := runCLI(ctx, r.o.Binary, r.env, "agent", "set", "--tenant", slug(i), "--name", "Mara", "--role", "Support",
			"--persona", persona, "--instructions", "Answer benchmark questions briefly.")
		return err
	}); err != nil {
		return nil, err
	}
	if err := each(n, func(i int) error {
		env := append(append([]string(nil), r.env...), "SLACK_APP_TOKEN="+ws[i].AppToken, "SLACK_BOT_TOKEN="+ws[i].BotToken)
		team, err := runCLI(ctx, r.o.Binary, env, "workspace", "add", "--tenant", slug(i/perTenant))
		if err == nil && team != ws[i].TeamID {
			err = fmt.Errorf("workspace add printed %q, want %s", team, ws[i].TeamID)
		}
		return err
	}); err != nil {
		return nil, err
	}
	return ws, nil
}

// startDaemon starts `konstruct run` and waits until every workspace in ws
// has its sockets open; it returns the time that took.
func (r *runner) startDaemon(ctx context.Context, ws []slacksim.WorkspaceSpec, timeout time.Duration) (time.Duration, error) {
	env := r.env
	if r.o.Profile {
		addr, err := freeAddr()
		if err != nil {
			return 0, err
		}
		r.pprofAddr = addr
		env = withEnv(env, "KONSTRUCT_BENCH_PPROF="+addr)
	}
	p, d, err := r.spawnDaemon(ctx, env, ws, timeout)
	if p != nil {
		r.daemon = p
	}
	return d, err
}

// spawnDaemon starts `konstruct run` with env and waits until every
// workspace in ws has its sockets open (none: at once); the process is
// stopped at the end of the run if nobody stopped it before.
func (r *runner) spawnDaemon(ctx context.Context, env []string, ws []slacksim.WorkspaceSpec, timeout time.Duration) (*process, time.Duration, error) {
	return r.spawnRole(ctx, "run", env, r.logFile, ws, timeout)
}

// spawnRole starts `konstruct <role>` (run, gateway, worker) with env,
// its stderr to logw, and waits until every workspace in ws has its
// sockets open (none: at once); the process is stopped at the end of the
// run if nobody stopped it before.
func (r *runner) spawnRole(ctx context.Context, role string, env []string, logw io.Writer, ws []slacksim.WorkspaceSpec, timeout time.Duration) (*process, time.Duration, error) {
	start := time.Now()
	p, err := startProcess("konstruct "+role, []string{r.o.Binary, role}, env, "", logw, nil)
	if err != nil {
		return nil, 0, err
	}
	r.defer_(func() { _ = p.stop(30 * time.Second) })
	d, err := r.waitConnected(ctx, p, ws, start.Add(timeout))
	return p, d, err
}

// waitConnected waits until every workspace in ws has its sockets open.
func (r *runner) waitConnected(ctx context.Context, p *process, ws []slacksim.WorkspaceSpec, deadline time.Time) (time.Duration, error) {
	start := time.Now()
	for {
		connected := 0
		for _, w := range ws {
			if r.sim.Connections(w.AppID) >= connectionsPerWorkspace {
				connected++
			}
		}
		if connected == len(ws) {
			return time.Since(start), nil
		}
		if p.exited() {
			return 0, fmt.Errorf("%s exited: %w: %s", p.name, p.err, p.tail())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, fmt.Errorf("only %d of %d workspaces connected after %v", connected, len(ws), time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *runner) seedAndStart(ctx context.Context) (*target, error) {
	t := time.Now()
	ws, err := r.seed(ctx, r.o.Workspaces, 5, "")
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	n := r.o.StepWorkspaces
	if !r.o.SkipSockets {
		n = max(n, r.o.SocketWorkspaces)
	}
	more, err := r.seed(ctx, n-len(ws), 50, "s")
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	r.konWS, r.allWS = ws, append(append([]slacksim.WorkspaceSpec(nil), ws...), more...)
	r.rep.Setup.Seeded = len(r.allWS)
	r.rep.Setup.StepWorkspaces = min(r.o.StepWorkspaces, len(r.allWS))
	r.rep.Setup.SeedSeconds = time.Since(t).Round(10 * time.Millisecond).Seconds()
	r.log("seeded %d workspaces (%d tenants for the load, 1 per 50 others) with the CLI in %v", len(r.allWS), r.rep.Setup.Tenants, time.Since(t).Round(time.Millisecond))
	d, err := r.startDaemon(ctx, r.allWS, 120*time.Second)
	if err != nil {
		return nil, err
	}
	r.log("konstruct run: %d sockets open in %v", len(r.allWS)*connectionsPerWorkspace, d.Round(time.Millisecond))
	return newTarget("konstruct", ws), nil
}

// ackPhases plays every rate against a target. For konstruct it also reads
// the router's throughput from /metrics and profiles one phase.
func (r *runner) ackPhases(ctx context.Context, tgt *target, isDaemon bool) []AckRow {
	every := every(r.o.MentionShare)
	var rows []AckRow
	for _, rate := range r.o.Rates {
		if ctx.Err() != nil {
			break
		}
		var before float64
		if isDaemon {
			before = r.routed()
		}
		res := r.drive(ctx, drive{tgt: tgt, phase: fmt.Sprintf("%s-ack-%d", tgt.name, rate), rate: rate, dur: r.o.Phase, mentionEvery: every})
		row := AckRow{Target: tgt.name, Rate: rate, Actual: round1(res.actual), Sent: res.sent, Acked: len(res.acks), Redeliveries: res.redel, Ack: distOf(res.acks)}
		if isDaemon {
			row.Routed = round1((r.routed() - before) / res.elapsed.Seconds())
		}
		r.log("%-9s %5d env/s: sent %d (%.0f/s), acked %d, ack p50 %.3f p99 %.3f max %.3f ms, redelivered %d",
			tgt.name, rate, row.Sent, row.Actual, row.Acked, row.Ack.P50, row.Ack.P99, row.Ack.Max, row.Redeliveries)
		rows = append(rows, row)
		// Let the answers of this phase finish before the next one starts
		// (the slack-go reference only acks: nothing to wait for).
		if tgt.name != "slack-go" {
			r.waitAnswered(ctx, res.mentions, time.Now().Add(r.o.Drain))
		}
	}
	return rows
}

// every turns a mention share into "every n-th post" (0: none).
func every(share float64) int {
	if share <= 0 {
		return 0
	}
	return max(1, int(1/share+0.5))
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// steps raises the answered rate until a step fails: ack p99 above 5 ms, an
// ack redelivered, or answers not keeping up (all answered within 2 s plus
// twice the LLM time after the step's end).
func (r *runner) steps(ctx context.Context, tgt *target) {
	for i, rate := range r.o.Steps {
		if ctx.Err() != nil {
			return
		}
		var prof func()
		if r.o.Profile && i == 0 {
			prof = r.profile("pipeline", r.o.StepPhase)
		}
		start := time.Now()
		res := r.drive(ctx, drive{tgt: tgt, phase: fmt.Sprintf("step-%d", rate), rate: 2 * rate, dur: r.o.StepPhase, mentionEvery: 1})
		window := start.Add(r.o.StepPhase + 2*time.Second + 2*r.llmTime)
		late := r.waitAnswered(ctx, res.mentions, window)
		if prof != nil {
			prof()
		}
		if late > 0 {
			r.waitAnswered(ctx, res.mentions, time.Now().Add(r.o.Drain))
		}
		time.Sleep(50 * time.Millisecond)
		fb, ov, _ := r.latencies(res.mentions)
		row := StepRow{Rate: rate, Mentions: len(res.mentions), Answered: len(res.mentions) - late,
			Ack: distOf(res.acks), Feedback: distOf(fb), Overhead: distOf(ov)}
		// Answered per second of load: the offered rate when all were answered in time.
		row.PerSec = round1(float64(len(res.mentions)-late) / res.elapsed.Seconds())
		switch {
		case res.errors > 0:
			row.Why = fmt.Sprintf("%d posts failed", res.errors)
		case row.Ack.P99 > 5:
			row.Why = fmt.Sprintf("ack p99 %.2f ms > 5 ms", row.Ack.P99)
		case res.redel > 0:
			row.Why = fmt.Sprintf("%d envelopes redelivered", res.redel)
		case late > 0:
			row.Why = fmt.Sprintf("%d of %d answers late", late, row.Mentions)
		case res.actual < 0.9*float64(2*rate):
			row.Why = fmt.Sprintf("load generator reached only %.0f env/s", res.actual)
		default:
			row.OK = true
			r.rep.Sustained = max(r.rep.Sustained, row.PerSec)
		}
		r.log("step %4d mentions/s: %d answered (%.1f/s), ack p99 %.3f ms, feedback p99 %.1f ms, overhead p99 %.1f ms %s",
			rate, row.Answered, row.PerSec, row.Ack.P99, row.Feedback.P99, row.Overhead.P99, row.Why)
		r.rep.Steps = append(r.rep.Steps, row)
		if !row.OK {
			return
		}
	}
}

// integrity counts duplicate answers (more than one bot message in a
// thread) and lost ones (no final answer) among the daemon's mentions.
func (r *runner) integrity(all []*mention) {
	for _, m := range all {
		if m.target != "konstruct" {
			continue
		}
		r.rep.Mentions++
		v := r.sim.Thread(m.team, m.channel, m.ts)
		bots := v.BotReplies()
		if len(bots) > 1 {
			r.rep.Duplicates++
		}
		if !r.answered(m) {
			r.rep.Lost++
			if len(r.rep.LostDetail) < 5 {
				var texts []string
				for _, b := range bots {
					texts = append(texts, fmt.Sprintf("%q", truncate(b.Text, 80)))
				}
				for u, e := range v.Ephemerals {
					texts = append(texts, fmt.Sprintf("ephemeral to %s: %q", u, strings.Join(e, " | ")))
				}
				r.rep.LostDetail = append(r.rep.LostDetail, fmt.Sprintf("%s %s %s (%s): %s", m.team, m.channel, m.ts, m.phase, strings.Join(texts, "; ")))
			}
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// routed reads the router's decision count from the daemon's /metrics.
func (r *runner) routed() float64 {
	m, err := scrape(context.Background(), r.httpAddr)
	if err != nil {
		return 0
	}
	return sum(m, metricRouted)
}

func httpGet(ctx context.Context, url string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// profile starts a CPU profile of the daemon for d; the returned func waits
// for it, saves it under OutDir and, when the go tool is around, its top.
func (r *runner) profile(name string, d time.Duration) func() {
	if r.pprofAddr == "" {
		return func() {}
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	done := make(chan []byte, 1)
	go func() {
		b, err := httpGet(context.Background(), fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", r.pprofAddr, secs), d+30*time.Second)
		if err != nil {
			r.log("profile %s: %v", name, err)
		}
		done <- b
	}()
	return func() {
		b := <-done
		if len(b) == 0 {
			return
		}
		path := filepath.Join(r.o.OutDir, "daemon-"+name+".pprof")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return
		}
		r.rep.Profile = strings.TrimPrefix(strings.Join([]string{r.rep.Profile, path}, " "), " ")
		goBin, err := exec.LookPath("go")
		if err != nil {
			return
		}
		out, err := exec.CommandContext(context.Background(), goBin, "tool", "pprof", "-top", "-nodecount=25", r.o.Binary, path).Output()
		if err != nil {
			return
		}
		_ = os.WriteFile(strings.TrimSuffix(path, ".pprof")+"-top.txt", out, 0o644)
		r.rep.ProfileTop += fmt.Sprintf("--- daemon CPU, %s phase (%s)\n%s", name, path, topLines(string(out), 16))
	}
}

// topLines keeps pprof's header and the first n rows.
func topLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		if strings.Contains(l, "flat%") {
			return strings.Join(lines[max(0, i-1):min(len(lines), i+1+n)], "\n") + "\n"
		}
	}
	return ""
}
