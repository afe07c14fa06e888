package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/slacksim"
)

// ChaosOptions configures a chaos run (Chaos). Zero fields take the
// defaults of `konstruct bench --chaos`.
type ChaosOptions struct {
	// Binary is the konstruct executable (required).
	Binary string
	// AdminURL may create databases and roles; used when Database is nil.
	AdminURL string
	// Database is a database made elsewhere (tests: testenv.NewPG); nil:
	// the run makes its own and drops it at the end.
	Database *Database
	// Redis is the daemon's Redis, which the run stops and starts again;
	// nil: a private redis-server with AOF (appendfsync always, so that
	// Redis's own crash loses nothing), never the shared Redis.
	Redis Redis

	// Workspaces carry the load (default 20, one tenant per 5).
	Workspaces int
	// Rate is the load in envelopes per second over all workspaces (default
	// 100); every MentionEvery-th post mentions the bot (default 10), the
	// rest is channel chatter.
	Rate         int
	MentionEvery int
	// The timeline: Warmup of load (default 15 s); then Redis is killed for
	// Outage (30 s); KillAt into the outage the daemon is SIGKILLed (15 s)
	// and started again RestartAfter later (2 s, systemd's RestartSec) —
	// inside the outage, or, when that falls at or past its end, right
	// after Redis is back; the load goes on for After once Redis is back
	// (15 s) and the daemon is up.
	Warmup time.Duration
	Outage time.Duration
	// QuietBeforeOutage stops new mentions (chatter goes on) this long
	// before Redis is killed, so that no reply is being generated when it
	// dies (default 0: mentions never stop). Such a reply is finished by
	// the janitor once its heartbeat deadline has passed, about a minute
	// after Redis is back, which a short test cannot wait for.
	QuietBeforeOutage time.Duration
	KillAt            time.Duration
	RestartAfter      time.Duration
	After             time.Duration
	// NoFaults turns off Slack's own trouble: by default, every
	// DisconnectEvery (2 s) one workspace's sockets get a refresh
	// disconnect, and every CutEvery (5 s) one workspace's sockets are cut
	// without a frame; envelopes unacked after AckTimeout (3 s, Slack's)
	// are redelivered.
	NoFaults        bool
	DisconnectEvery time.Duration
	CutEvery        time.Duration
	AckTimeout      time.Duration
	// Drain bounds the wait for every answer after the load (default 3 min:
	// a reply whose worker died is taken over after about a minute).
	Drain time.Duration
	// LLMFirstToken and LLMTokenDelay shape the fake LLM's answer (default 200 ms, 5 ms).
	LLMFirstToken time.Duration
	LLMTokenDelay time.Duration
	// OutDir receives the daemon's log and the private Redis's data
	// (default: a new temporary directory, kept).
	OutDir string
	// Progress receives one line per step (default: discard).
	Progress io.Writer
}

func (o *ChaosOptions) defaults() {
	o.AdminURL = cmp.Or(o.AdminURL, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	o.Workspaces = cmp.Or(o.Workspaces, 20)
	o.Rate = cmp.Or(o.Rate, 100)
	o.MentionEvery = cmp.Or(o.MentionEvery, 10)
	o.Warmup = cmp.Or(o.Warmup, 15*time.Second)
	o.Outage = cmp.Or(o.Outage, 30*time.Second)
	o.KillAt = cmp.Or(o.KillAt, o.Outage/2)
	o.RestartAfter = cmp.Or(o.RestartAfter, 2*time.Second)
	o.After = cmp.Or(o.After, 15*time.Second)
	o.DisconnectEvery = cmp.Or(o.DisconnectEvery, 2*time.Second)
	o.CutEvery = cmp.Or(o.CutEvery, 5*time.Second)
	o.AckTimeout = cmp.Or(o.AckTimeout, 3*time.Second)
	o.Drain = cmp.Or(o.Drain, 3*time.Minute)
	o.LLMFirstToken = cmp.Or(o.LLMFirstToken, 200*time.Millisecond)
	o.LLMTokenDelay = cmp.Or(o.LLMTokenDelay, 5*time.Millisecond)
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// ChaosReport is what a chaos run saw, read where a user would: the
// threads in Slack, the envelopes' acks, the daemon's /metrics.
type ChaosReport struct {
	Started time.Time  `json:"started"`
	Machine Machine    `json:"machine"`
	Setup   ChaosSetup `json:"setup"`

	// Mentions were asked; AnsweredOnce got exactly one bot message in
	// their thread, the final answer; Duplicates got more than one bot
	// message; Lost got no final answer (ErrorAnswers of them a short error
	// text instead).
	Mentions     int `json:"mentions"`
	AnsweredOnce int `json:"answered_once"`
	Duplicates   int `json:"duplicates"`
	Lost         int `json:"lost"`
	ErrorAnswers int `json:"error_answers"`
	// Stuck counts bot messages left as a "Thinking..." placeholder or an
	// unfinished stream, in any thread the bot wrote in.
	Stuck int `json:"stuck"`
	// Chatter posts were made; ChatterAnswered got a bot message in their thread.
	Chatter         int `json:"chatter"`
	ChatterAnswered int `json:"chatter_answered"`
	// Envelopes Slack delivered; Unacked were never acked (Slack gave up on
	// them); Redelivered were delivered again for a missing ack.
	Envelopes   int `json:"envelopes"`
	Unacked     int `json:"unacked"`
	Redelivered int `json:"redelivered"`
	// Slack's trouble made: refresh disconnects and cut sockets.
	Disconnects int `json:"disconnects"`
	CutSockets  int `json:"cut_sockets"`
	// The daemon: SIGKILLs, starts after the first, and exits the run did
	// not cause (each restarted after 2 s, like systemd's Restart=on-failure).
	Kills     int `json:"kills"`
	Restarts  int `json:"restarts"`
	SelfExits int `json:"self_exits"`
	// SpoolPeak is the most records the spool held; Spooled how many went
	// through it (the daemon's /metrics, polled every 100 ms).
	SpoolPeak int `json:"spool_peak"`
	Spooled   int `json:"spooled"`
	// Redis back → the spool empty, and → the last bot write of an answer.
	RedisBackToSpoolEmpty float64 `json:"redis_back_to_spool_empty_s"`
	RedisBackToLastAnswer float64 `json:"redis_back_to_last_answer_s"`
	// Acks by when an envelope was first delivered.
	Acks []AckWindow `json:"acks"`
	// Timeline is when each step happened; Deliveries is every envelope
	// of the run's workspaces, as Slack saw it (for tests: not in the JSON).
	Timeline   Timeline                `json:"timeline"`
	Deliveries []slacksim.EnvelopeStat `json:"-"`
	// Failures lists a few threads that show what went wrong; Slowest the
	// mentions answered last, with when they were asked and answered.
	Failures       []string `json:"failures,omitempty"`
	Slowest        []string `json:"slowest,omitempty"`
	OutDir         string   `json:"out_dir"`
	ElapsedSeconds float64  `json:"elapsed_s"`
}

// ChaosSetup records the run's shape.
type ChaosSetup struct {
	Workspaces      int     `json:"workspaces"`
	Rate            int     `json:"rate"`
	MentionEvery    int     `json:"mention_every"`
	WarmupSeconds   float64 `json:"warmup_s"`
	OutageSeconds   float64 `json:"outage_s"`
	KillAtSeconds   float64 `json:"kill_at_s"`
	RestartSeconds  float64 `json:"restart_after_s"`
	AfterSeconds    float64 `json:"after_s"`
	Faults          bool    `json:"faults"`
	AckTimeoutMilli float64 `json:"ack_timeout_ms"`
	LLMMillis       float64 `json:"llm_ms"`
	RedisURL        string  `json:"redis_url"`
}

// Timeline is when the chaos run's steps happened (zero: did not).
type Timeline struct {
	LoadStart   time.Time `json:"load_start"`
	RedisDown   time.Time `json:"redis_down"`
	Kill        time.Time `json:"kill"`
	Restart     time.Time `json:"restart"`
	Reconnected time.Time `json:"reconnected"` // the restarted daemon's sockets all open
	RedisBack   time.Time `json:"redis_back"`
	LoadEnd     time.Time `json:"load_end"`
}

// AckWindow is the acks of the envelopes first delivered in one window of
// the timeline.
type AckWindow struct {
	Window      string `json:"window"`
	Envelopes   int    `json:"envelopes"`
	Acked       int    `json:"acked"`
	Redelivered int    `json:"redelivered"`
	// Ack is first delivery → ack, Slack's redeliveries included.
	Ack Dist `json:"ack"`
}

// OK reports whether the run met the goal: every mention answered exactly
// once, nothing stuck, no chatter answered, every envelope acked.
func (c ChaosReport) OK() bool {
	return c.Mentions > 0 && c.AnsweredOnce == c.Mentions && c.Duplicates == 0 && c.Lost == 0 &&
		c.Stuck == 0 && c.ChatterAnswered == 0 && c.Unacked == 0
}

// Chaos runs the binary under a realistic load through Slack's trouble and
// a Redis outage with a SIGKILL of the daemon inside it, then checks every
// thread: each mention answered exactly once, no placeholder left, no
// chatter answered. It prints the report (a table and one JSON line) to out
// and returns an error wrapping ErrIntegrity when the goal was missed.
func Chaos(ctx context.Context, o ChaosOptions, out io.Writer) (ChaosReport, error) {
	o.defaults()
	if o.Binary == "" {
		return ChaosReport{}, errors.New("bench: ChaosOptions.Binary is required")
	}
	if o.KillAt >= o.Outage || o.QuietBeforeOutage >= o.Warmup {
		return ChaosReport{}, fmt.Errorf("bench: the daemon is killed %v into a %v outage, quiet %v of a %v warmup: the kill must fall inside the outage, the quiet inside the warmup",
			o.KillAt, o.Outage, o.QuietBeforeOutage, o.Warmup)
	}
	if o.OutDir == "" {
		dir, err := os.MkdirTemp("", "konstruct-chaos-")
		if err != nil {
			return ChaosReport{}, err
		}
		o.OutDir = dir
	} else if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return ChaosReport{}, err
	}
	c := &chaos{o: o}
	rep, err := c.run(ctx)
	rep.ElapsedSeconds = time.Since(rep.Started).Round(100 * time.Millisecond).Seconds()
	if err != nil {
		return rep, err
	}
	writeChaosReport(out, rep)
	if !rep.OK() {
		return rep, fmt.Errorf("bench --chaos: %d of %d mentions answered once, %d duplicates, %d lost, %d stuck, %d chatter answered, %d envelopes unacked: %w",
			rep.AnsweredOnce, rep.Mentions, rep.Duplicates, rep.Lost, rep.Stuck, rep.ChatterAnswered, rep.Unacked, ErrIntegrity)
	}
	return rep, nil
}

// chaos is one chaos run.
type chaos struct {
	o   ChaosOptions
	r   *runner
	rep ChaosReport

	redis Redis
	watch spoolWatch

	// the timeline, as it happened
	loadStart, outageStart, killAt, restartAt, connectedAt, redisBack, loadEnd time.Time

	bg sync.WaitGroup // restarts waiting for their sockets

	mu      sync.Mutex
	daemon  *process
	wantUp  bool // the run wants the daemon up: an exit is restarted
	quiet   bool // no new mentions for now (QuietBeforeOutage)
	chatter []*mention
}

func (c *chaos) run(ctx context.Context) (ChaosReport, error) {
	o := c.o
	c.rep = ChaosReport{Started: time.Now(), OutDir: o.OutDir, Machine: machine()}
	ro := Options{
		Binary: o.Binary, AdminURL: o.AdminURL, Workspaces: o.Workspaces,
		LLMFirstToken: o.LLMFirstToken, LLMTokenDelay: o.LLMTokenDelay, Drain: o.Drain,
		OutDir: o.OutDir, Progress: o.Progress, SkipBolt: true, SkipSockets: true, SkipDurable: true,
	}
	c.redis = o.Redis
	if c.redis == nil {
		srv, err := startRedisServer(filepath.Join(o.OutDir, "redis"), "always")
		if err != nil {
			return c.rep, fmt.Errorf("chaos: a Redis of the run's own: %w", err)
		}
		defer func() { _ = srv.Stop() }()
		c.redis = srv
	}
	ro.RedisURL = c.redis.URL()
	ro.defaults()
	r := newRunner(ro)
	c.r = r
	// Slack as it is: the bot's own posts come back as events; unacked
	// envelopes are redelivered after AckTimeout. Rate limits stay off:
	// they would measure Slack's budget, not Konstruct.
	r.simOpts = []slacksim.Option{slacksim.WithRateLimits(false), slacksim.WithAckTimeout(o.AckTimeout)}
	r.extDB = o.Database
	r.privateRedis = true
	defer r.cleanup()
	c.rep.Setup = ChaosSetup{
		Workspaces: o.Workspaces, Rate: o.Rate, MentionEvery: o.MentionEvery,
		WarmupSeconds: o.Warmup.Seconds(), OutageSeconds: o.Outage.Seconds(), KillAtSeconds: o.KillAt.Seconds(),
		RestartSeconds: o.RestartAfter.Seconds(), AfterSeconds: o.After.Seconds(), Faults: !o.NoFaults,
		AckTimeoutMilli: ms(o.AckTimeout), RedisURL: ro.RedisURL,
	}

	if err := r.setup(ctx); err != nil {
		return c.rep, err
	}
	c.rep.Setup.LLMMillis = ms(r.llmTime)
	ws, err := r.seed(ctx, o.Workspaces, 5, "")
	if err != nil {
		return c.rep, fmt.Errorf("seed: %w", err)
	}
	r.konWS, r.allWS = ws, ws
	if err := c.start(ctx, true); err != nil {
		return c.rep, err
	}
	r.log("chaos: %d workspaces, %d env/s (every %d-th post a mention), warmup %v, Redis outage %v with a SIGKILL of the daemon at +%v and a restart %v later, %v after; Slack faults %v",
		o.Workspaces, o.Rate, o.MentionEvery, o.Warmup, o.Outage, o.KillAt, o.RestartAfter, o.After, !o.NoFaults)

	bg, stopBG := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopBG(); wg.Wait(); c.bg.Wait() }()
	wg.Go(func() { c.watch.run(bg, r.httpAddr) })
	wg.Go(func() { c.supervise(bg) })
	stopLoad := make(chan struct{})
	var load sync.WaitGroup
	tgt := newTarget("konstruct", ws)
	load.Go(func() { c.load(bg, tgt, stopLoad) })
	if !o.NoFaults {
		load.Go(func() { c.faults(bg, ws, stopLoad) })
	}
	c.loadStart = time.Now()

	if err := c.timeline(ctx); err != nil {
		close(stopLoad)
		load.Wait()
		return c.rep, err
	}
	close(stopLoad)
	load.Wait()
	c.loadEnd = time.Now()
	r.log("chaos: load stopped; waiting up to %v for every answer", o.Drain)

	// Every answer, then a grace period in which a duplicate would show.
	r.mentMu.Lock()
	all := append([]*mention(nil), r.mentions...)
	r.mentMu.Unlock()
	if left := r.waitAnswered(ctx, all, time.Now().Add(o.Drain)); left > 0 {
		r.log("chaos: %d of %d mentions unanswered after %v", left, len(all), o.Drain)
	}
	c.waitNotStuck(ctx, time.Now().Add(30*time.Second))
	time.Sleep(max(2*time.Second, 2*r.llmTime))
	c.check(all)

	c.mu.Lock()
	c.wantUp = false
	p := c.daemon
	c.mu.Unlock()
	if err := p.stop(daemonStopGrace); err != nil {
		r.log("daemon stop: %v", err)
	}
	return c.rep, ctx.Err()
}

// timeline plays the outage: Redis down, the daemon killed inside it and
// started again, Redis back, then the load's last stretch.
func (c *chaos) timeline(ctx context.Context) error {
	o, r := c.o, c.r
	if !sleepCtx(ctx, o.Warmup-o.QuietBeforeOutage) {
		return ctx.Err()
	}
	if o.QuietBeforeOutage > 0 {
		c.setQuiet(true)
		if !sleepCtx(ctx, o.QuietBeforeOutage) {
			return ctx.Err()
		}
		c.setQuiet(false)
	}
	c.outageStart = time.Now()
	if err := c.redis.Stop(); err != nil {
		return fmt.Errorf("stop Redis: %w", err)
	}
	r.log("chaos: Redis stopped (SIGKILL)")
	until := func(at time.Duration) bool { return sleepCtx(ctx, time.Until(c.outageStart.Add(at))) }

	if !until(o.KillAt) {
		return ctx.Err()
	}
	c.kill()
	restart := o.KillAt + o.RestartAfter
	if restart < o.Outage {
		if !until(restart) {
			return ctx.Err()
		}
		if err := c.start(ctx, false); err != nil {
			return err
		}
	}
	if !until(o.Outage) {
		return ctx.Err()
	}
	if err := c.redis.Start(); err != nil {
		return fmt.Errorf("start Redis again: %w", err)
	}
	c.redisBack = time.Now()
	r.log("chaos: Redis is back (%v after it stopped)", c.redisBack.Sub(c.outageStart).Round(time.Millisecond))
	if restart >= o.Outage {
		if err := c.start(ctx, false); err != nil {
			return err
		}
	}
	spoolEmpty := make(chan time.Time, 1)
	go func() { spoolEmpty <- c.waitSpoolEmpty(ctx, time.Now().Add(spoolDrainBound)) }()
	sleepCtx(ctx, o.After)
	if at := <-spoolEmpty; !at.IsZero() {
		c.rep.RedisBackToSpoolEmpty = round3(max(0, at.Sub(c.redisBack).Seconds()))
	}
	return ctx.Err()
}

func (c *chaos) setQuiet(q bool) {
	c.mu.Lock()
	c.quiet = q
	c.mu.Unlock()
}

// start starts the daemon. The first start waits for every socket; a
// restart does not hold the timeline up: the time its sockets are all open
// is noted when it comes.
func (c *chaos) start(ctx context.Context, first bool) error {
	r := c.r
	p, err := startProcess("konstruct run", []string{r.o.Binary, "run"}, r.env, "", r.logFile, nil)
	if err != nil {
		return err
	}
	r.defer_(func() { _ = p.stop(daemonStopGrace) })
	c.mu.Lock()
	c.daemon, c.wantUp = p, true
	if !first {
		c.rep.Restarts++
		c.restartAt = time.Now()
	}
	c.mu.Unlock()
	connected := func() error {
		d, err := r.waitConnected(ctx, p, r.allWS, time.Now().Add(daemonStartBound))
		if err != nil {
			return err
		}
		c.mu.Lock()
		if !first && c.daemon == p {
			c.connectedAt = time.Now()
		}
		c.mu.Unlock()
		r.log("chaos: daemon (pid %d) up, %d sockets open in %v", p.pid(), len(r.allWS)*connectionsPerWorkspace, d.Round(time.Millisecond))
		return nil
	}
	if first {
		return connected()
	}
	c.bg.Go(func() {
		if err := connected(); err != nil {
			r.log("chaos: the restarted daemon: %v", err) // the supervisor restarts it if it exited
		}
	})
	return nil
}

// kill SIGKILLs the daemon.
func (c *chaos) kill() {
	c.mu.Lock()
	c.wantUp = false
	p := c.daemon
	c.rep.Kills++
	c.killAt = time.Now()
	c.mu.Unlock()
	p.kill()
	c.watch.bank()
	c.r.log("chaos: daemon (pid %d) killed (SIGKILL)", p.pid())
}

// supervise restarts a daemon that exited by itself, 2 s later (systemd's
// Restart=on-failure, RestartSec=2s), while the run wants it up.
func (c *chaos) supervise(ctx context.Context) {
	for sleepCtx(ctx, 100*time.Millisecond) {
		c.mu.Lock()
		p, want := c.daemon, c.wantUp
		c.mu.Unlock()
		if !want || p == nil || !p.exited() {
			continue
		}
		c.mu.Lock()
		c.rep.SelfExits++
		c.wantUp = false
		c.mu.Unlock()
		c.watch.bank()
		c.r.log("chaos: the daemon exited by itself (%v): %s; restarting it in 2 s", p.err, lastLine(p.tail()))
		if !sleepCtx(ctx, 2*time.Second) {
			return
		}
		if err := c.start(ctx, false); err != nil {
			c.r.log("chaos: restart: %v", err)
		}
	}
}

// load posts at the run's rate until stop: mentions and chatter.
func (c *chaos) load(ctx context.Context, tgt *target, stop <-chan struct{}) {
	o, r := c.o, c.r
	start := time.Now()
	sent, i := 0, 0
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		due := int(time.Since(start).Seconds() * float64(o.Rate))
		c.mu.Lock()
		every := o.MentionEvery
		if c.quiet {
			every = 0
		}
		c.mu.Unlock()
		for sent < due {
			p, err := r.post(tgt, "chaos", i, every)
			i++
			if err != nil {
				sent++
				continue
			}
			sent += p.envelopes
			switch {
			case p.mention != nil:
				r.mentMu.Lock()
				r.mentions = append(r.mentions, p.mention)
				r.mentMu.Unlock()
			case p.chatter != nil:
				c.mu.Lock()
				c.chatter = append(c.chatter, p.chatter)
				c.mu.Unlock()
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// faults makes Slack's trouble until stop: refresh disconnects and cut
// sockets of random workspaces.
func (c *chaos) faults(ctx context.Context, ws []slacksim.WorkspaceSpec, stop <-chan struct{}) {
	o, r := c.o, c.r
	disc := time.NewTicker(o.DisconnectEvery)
	defer disc.Stop()
	cut := time.NewTicker(o.CutEvery)
	defer cut.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-disc.C:
			w := ws[rand.IntN(len(ws))]
			if r.sim.Disconnect(w.AppID, "refresh_requested") > 0 {
				c.mu.Lock()
				c.rep.Disconnects++
				c.mu.Unlock()
			}
		case <-cut.C:
			w := ws[rand.IntN(len(ws))]
			if r.sim.DropConnections(w.AppID) > 0 {
				c.mu.Lock()
				c.rep.CutSockets++
				c.mu.Unlock()
			}
		}
	}
}

// waitSpoolEmpty returns when the daemon reports an empty spool (zero time
// if it never did before the deadline).
func (c *chaos) waitSpoolEmpty(ctx context.Context, deadline time.Time) time.Time {
	for time.Now().Before(deadline) {
		if m, err := scrape(ctx, c.r.httpAddr); err == nil {
			c.watch.observe(m)
			if sum(m, metricSpool) == 0 {
				return time.Now()
			}
		}
		if !sleepCtx(ctx, spoolPollEvery) {
			break
		}
	}
	return time.Time{}
}

// botThreads lists every thread the bot wrote in.
func (c *chaos) botThreads() [][3]string {
	c.r.botMu.Lock()
	defer c.r.botMu.Unlock()
	out := make([][3]string, 0, len(c.r.threads))
	for k := range c.r.threads {
		p := strings.SplitN(k, "|", 3)
		out = append(out, [3]string{p[0], p[1], p[2]})
	}
	return out
}

// stuck reports whether a bot message is a placeholder or a stream nobody finishes.
func stuck(m slacksim.ViewMessage) bool {
	return m.IsBot && (m.Streaming || strings.TrimSpace(m.Text) == konstruct.TextThinking)
}

// waitNotStuck waits (bounded) until no bot message is a placeholder.
func (c *chaos) waitNotStuck(ctx context.Context, deadline time.Time) {
	for time.Now().Before(deadline) {
		n := 0
		for _, t := range c.botThreads() {
			for _, m := range c.r.sim.Thread(t[0], t[1], t[2]).Messages {
				if stuck(m) {
					n++
				}
			}
		}
		if n == 0 || !sleepCtx(ctx, 200*time.Millisecond) {
			return
		}
	}
}

// check reads every thread and every envelope and fills the report.
func (c *chaos) check(all []*mention) {
	r, rep := c.r, &c.rep
	fail := func(format string, args ...any) {
		if len(rep.Failures) < 10 {
			rep.Failures = append(rep.Failures, fmt.Sprintf(format, args...))
		}
	}
	mentionThreads := map[string]bool{}
	var lastAnswer time.Time
	type answeredAt struct {
		m           *mention
		first, last time.Time
	}
	var byLast []answeredAt
	for _, m := range all {
		rep.Mentions++
		mentionThreads[threadKey(m.team, m.channel, m.ts)] = true
		bots := r.sim.Thread(m.team, m.channel, m.ts).BotReplies()
		final, errText := 0, ""
		for _, b := range bots {
			switch {
			case stuck(b):
			case strings.Contains(b.Text, answerMarker):
				final++
			default:
				errText = b.Text
			}
		}
		switch {
		case len(bots) == 1 && final == 1:
			rep.AnsweredOnce++
		case len(bots) > 1:
			rep.Duplicates++
			fail("duplicate: %s %s %s has %d bot messages", m.team, m.channel, m.ts, len(bots))
		}
		if final == 0 {
			rep.Lost++
			if errText != "" {
				rep.ErrorAnswers++
			}
			fail("lost: %s %s %s: %d bot messages%s", m.team, m.channel, m.ts, len(bots), quoted(errText))
		}
		r.botMu.Lock()
		if t := r.threads[threadKey(m.team, m.channel, m.ts)]; t != nil {
			if t.last.After(lastAnswer) {
				lastAnswer = t.last
			}
			byLast = append(byLast, answeredAt{m, t.first, t.last})
		}
		r.botMu.Unlock()
	}
	slices.SortFunc(byLast, func(a, b answeredAt) int { return b.last.Compare(a.last) })
	at := func(t time.Time) string {
		if t.IsZero() || c.loadStart.IsZero() {
			return "-"
		}
		return fmt.Sprintf("+%.1fs", t.Sub(c.loadStart).Seconds())
	}
	for _, a := range byLast[:min(5, len(byLast))] {
		rep.Slowest = append(rep.Slowest, fmt.Sprintf("%s %s %s: asked %s, first bot write %s, answered %s", a.m.team, a.m.channel, a.m.ts, at(a.m.at), at(a.first), at(a.last)))
	}
	if !lastAnswer.IsZero() && !c.redisBack.IsZero() {
		rep.RedisBackToLastAnswer = round3(max(0, lastAnswer.Sub(c.redisBack).Seconds()))
	}
	for _, t := range c.botThreads() {
		for _, m := range r.sim.Thread(t[0], t[1], t[2]).Messages {
			if stuck(m) {
				rep.Stuck++
				fail("stuck: %s %s thread %s: bot message %s %q (streaming %v)", t[0], t[1], t[2], m.TS, truncate(m.Text, 60), m.Streaming)
			}
		}
	}
	c.mu.Lock()
	chatter := append([]*mention(nil), c.chatter...)
	c.mu.Unlock()
	for _, p := range chatter {
		rep.Chatter++
		if bots := r.sim.Thread(p.team, p.channel, p.ts).BotReplies(); len(bots) > 0 {
			rep.ChatterAnswered++
			fail("chatter answered: %s %s %s: %q", p.team, p.channel, p.ts, truncate(bots[0].Text, 60))
		}
	}
	c.acks()
	rep.SpoolPeak, _, rep.Spooled, _ = c.watch.snapshot()
}

func quoted(s string) string {
	if s == "" {
		return ""
	}
	return fmt.Sprintf(", one says %q", truncate(s, 80))
}

// acks sorts the envelopes by when they were first delivered into the
// timeline's windows.
func (c *chaos) acks() {
	rep := &c.rep
	type window struct {
		name     string
		from, to time.Time
		lat      []time.Duration
		n, acked int
		redel    int
	}
	end := time.Now()
	c.mu.Lock()
	connectedAt, restartAt := c.connectedAt, c.restartAt
	c.mu.Unlock()
	afterFrom := c.redisBack
	if connectedAt.After(afterFrom) {
		afterFrom = connectedAt
	}
	ws := []*window{
		{name: "before the outage", from: c.loadStart, to: c.outageStart},
		{name: "outage, daemon up (spool)", from: c.outageStart, to: c.killAt},
		{name: "daemon killed, until its sockets are back", from: c.killAt, to: cmp.Or(connectedAt, afterFrom)},
	}
	if !connectedAt.IsZero() && connectedAt.Before(c.redisBack) {
		ws = append(ws, &window{name: "outage, restarted daemon (spool)", from: connectedAt, to: c.redisBack})
	}
	ws = append(ws, &window{name: "Redis back", from: afterFrom, to: end})
	apps := map[string]bool{}
	for _, w := range c.r.allWS {
		apps[w.AppID] = true
	}
	rep.Timeline = Timeline{LoadStart: c.loadStart, RedisDown: c.outageStart, Kill: c.killAt, Restart: restartAt,
		Reconnected: connectedAt, RedisBack: c.redisBack, LoadEnd: c.loadEnd}
	for _, st := range c.r.sim.Envelopes() {
		if !apps[st.AppID] {
			continue
		}
		rep.Deliveries = append(rep.Deliveries, st)
		rep.Envelopes++
		if st.Acked.IsZero() {
			rep.Unacked++
		}
		if st.Retries > 0 {
			rep.Redelivered++
		}
		if st.Sent.IsZero() {
			continue
		}
		for _, w := range ws {
			if st.Sent.Before(w.from) || !st.Sent.Before(w.to) {
				continue
			}
			w.n++
			if st.Retries > 0 {
				w.redel++
			}
			if !st.Acked.IsZero() {
				w.acked++
				w.lat = append(w.lat, st.Acked.Sub(st.Sent))
			}
			break
		}
	}
	for _, w := range ws {
		rep.Acks = append(rep.Acks, AckWindow{Window: w.name, Envelopes: w.n, Acked: w.acked, Redelivered: w.redel, Ack: distOf(w.lat)})
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return truncate(s, 200)
}

// sleepCtx sleeps d (or not at all when d ≤ 0); false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
