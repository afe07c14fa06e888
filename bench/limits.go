package bench

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/konstruct/konstruct/slacksim"
)

// LimitsOptions shapes the Slack-limits phases. Zero fields take the
// defaults of a full run (or of --quick).
type LimitsOptions struct {
	// RealisticWorkspaces, RealisticRate, RealisticMentionShare and
	// RealisticPhase shape the realistic phase (default 250 workspaces,
	// 2,000 envelopes/s — 8 a second each, Slack's 30,000 events per
	// workspace and hour —, 5 % mentions, 10 s).
	RealisticWorkspaces   int
	RealisticRate         int
	RealisticMentionShare float64
	RealisticPhase        time.Duration
	// BurstMentions are asked in BurstWindow into one workspace, spread
	// over BurstChannels channels and asked by BurstPeople people (default
	// 60 in 10 s, 10 channels, 30 people). The two-worker phase plays the
	// same burst against `konstruct gateway` and two `konstruct worker`
	// processes (SkipShared leaves it out).
	BurstMentions int
	BurstWindow   time.Duration
	BurstChannels int
	BurstPeople   int
	SkipShared    bool
	// Noisy neighbours: NoisyQuiet tenants ask NoisyQuietRate questions a
	// second in all, first alone for NoisyAlone, then for NoisyFlood while
	// NoisyFloods tenants each ask NoisyFloodRate a second, spread over
	// NoisyFloodChannels channels of their one workspace, on a model that
	// takes NoisyFloodLLM (the quiet tenants' model takes the run's LLM
	// time). The provider's max_concurrency is NoisySlots and the daemon's
	// worker.concurrency NoisyWorkers (default 4 quiet tenants at 2/s,
	// 15 s alone, 15 s of flood by 2 tenants at 8/s over 16 channels on a
	// 5 s model, 16 slots, the run's worker concurrency). SkipNoisy leaves
	// it out.
	NoisyQuiet         int
	NoisyQuietRate     float64
	NoisyAlone         time.Duration
	NoisyFlood         time.Duration
	NoisyFloods        int
	NoisyFloodRate     float64
	NoisyFloodChannels int
	NoisyFloodLLM      time.Duration
	NoisySlots         int
	NoisyWorkers       int
	SkipNoisy          bool
}

func (l *LimitsOptions) defaults(quick bool) {
	if quick {
		// Seconds each: every path runs, no goal is meant to be judged.
		l.RealisticWorkspaces = cmp.Or(l.RealisticWorkspaces, 10)
		l.RealisticRate = cmp.Or(l.RealisticRate, 80)
		l.RealisticPhase = cmp.Or(l.RealisticPhase, 2*time.Second)
		l.BurstMentions = cmp.Or(l.BurstMentions, 12)
		l.BurstWindow = cmp.Or(l.BurstWindow, 2*time.Second)
		l.BurstChannels = cmp.Or(l.BurstChannels, 3)
		l.BurstPeople = cmp.Or(l.BurstPeople, 6)
		l.NoisyQuiet = cmp.Or(l.NoisyQuiet, 2)
		l.NoisyAlone = cmp.Or(l.NoisyAlone, 2*time.Second)
		l.NoisyFlood = cmp.Or(l.NoisyFlood, 2*time.Second)
		l.NoisyFloodRate = cmp.Or(l.NoisyFloodRate, 4)
		l.NoisyFloodChannels = cmp.Or(l.NoisyFloodChannels, 4)
		l.NoisyFloodLLM = cmp.Or(l.NoisyFloodLLM, 500*time.Millisecond)
		l.NoisySlots = cmp.Or(l.NoisySlots, 4)
	}
	l.RealisticWorkspaces = cmp.Or(l.RealisticWorkspaces, 250)
	l.RealisticRate = cmp.Or(l.RealisticRate, 2000)
	l.RealisticMentionShare = cmp.Or(l.RealisticMentionShare, 0.05)
	l.RealisticPhase = cmp.Or(l.RealisticPhase, 10*time.Second)
	l.BurstMentions = cmp.Or(l.BurstMentions, 60)
	l.BurstWindow = cmp.Or(l.BurstWindow, 10*time.Second)
	l.BurstChannels = cmp.Or(l.BurstChannels, 10)
	l.BurstPeople = cmp.Or(l.BurstPeople, 30)
	l.NoisyQuiet = cmp.Or(l.NoisyQuiet, 4)
	l.NoisyQuietRate = cmp.Or(l.NoisyQuietRate, 2)
	l.NoisyAlone = cmp.Or(l.NoisyAlone, 15*time.Second)
	l.NoisyFlood = cmp.Or(l.NoisyFlood, 15*time.Second)
	l.NoisyFloods = cmp.Or(l.NoisyFloods, 2)
	l.NoisyFloodRate = cmp.Or(l.NoisyFloodRate, 8)
	l.NoisyFloodChannels = cmp.Or(l.NoisyFloodChannels, 16)
	l.NoisyFloodLLM = cmp.Or(l.NoisyFloodLLM, 5*time.Second)
	l.NoisySlots = cmp.Or(l.NoisySlots, 16)
}

// Limits is what the Slack-limits phases measured: slacksim enforcing
// Slack's tiers (429 + Retry-After), the daemon on its default budgets.
type Limits struct {
	Realistic *Realistic `json:"realistic,omitempty"`
	Burst     *Burst     `json:"burst,omitempty"`
	// Shared is the same burst against a gateway and two worker processes.
	Shared *Burst `json:"shared,omitempty"`
	Noisy  *Noisy `json:"noisy,omitempty"`
	// Over every phase: mentions answered more than once, or not at all.
	Mentions   int      `json:"mentions"`
	Duplicates int      `json:"duplicates"`
	Lost       int      `json:"lost"`
	LostDetail []string `json:"lost_detail,omitempty"`
	Error      string   `json:"error,omitempty"`
	// Profile is the daemon's CPU profile during a repeat of the realistic
	// load (never during the measured one), with its top.
	Profile    string `json:"profile,omitempty"`
	ProfileTop string `json:"-"`
}

// RateLimited is the 429s of a phase by method, as slacksim answered them
// (counted at its door) and as the daemon counted them
// (konstruct_slack_api_rate_limited_total), and every Web API call by method.
type RateLimited struct {
	Slack  map[string]int `json:"slack"`
	Daemon map[string]int `json:"daemon"`
	Calls  map[string]int `json:"calls"`
}

// Total is slacksim's 429s over every method.
func (rl RateLimited) Total() int {
	n := 0
	for _, v := range rl.Slack {
		n += v
	}
	return n
}

// Realistic is the realistic phase: many workspaces at Slack's event rate,
// mostly chatter.
type Realistic struct {
	Workspaces   int     `json:"workspaces"`
	MentionShare float64 `json:"mention_share"`
	Seconds      float64 `json:"phase_s"`
	AckRow
	Mentions int `json:"mentions"`
	Answered int `json:"answered"`
	// Feedback is mention → first bot write (the placeholder); Overhead is
	// mention → final answer minus the fake LLM's own time.
	Feedback Dist `json:"feedback"`
	Overhead Dist `json:"overhead"`
	// Chatter posts were made; ChatterAnswered got a bot write in their thread.
	Chatter         int         `json:"chatter"`
	ChatterAnswered int         `json:"chatter_answered"`
	RateLimited     RateLimited `json:"rate_limited"`
	// LoadAvg is the machine's 1-minute load average at the phase's end
	// (other work on a shared box shows here).
	LoadAvg float64 `json:"load_avg"`
	// Stages is where the daemon says the time went.
	Stages []StageMean `json:"stages,omitempty"`
	// Reference is the same load against bare slack-go clients that only
	// ack, right after (what the machine allows at that moment).
	Reference *AckRow `json:"reference,omitempty"`
}

// Burst is many mentions into one workspace in a few seconds, more than
// its chat.update budget allows.
type Burst struct {
	Processes string  `json:"processes"` // "konstruct run" or "konstruct gateway + 2 × konstruct worker"
	Mentions  int     `json:"mentions"`
	Seconds   float64 `json:"window_s"`
	Channels  int     `json:"channels"`
	People    int     `json:"people"`
	// AnsweredOnce threads show exactly one answer and nothing else.
	AnsweredOnce int `json:"answered_once"`
	// Completion is question → final answer; Feedback question → first bot write.
	Completion Dist `json:"completion"`
	Feedback   Dist `json:"feedback"`
	// Queued placeholders said "Queued — about N s" (else "Thinking...").
	Queued int `json:"queued_placeholders"`
	// PostedAnew answers were posted as a new message (past chat.update's
	// budget); Linger is, for those, answer posted → its placeholder gone.
	PostedAnew int     `json:"posted_anew"`
	Linger     Dist    `json:"linger"`
	LoadAvg    float64 `json:"load_avg"`
	// PlaceholdersLeft is threads still showing a placeholder at the end
	// (after waiting up to CleanBound); CleanSeconds is the last question →
	// every thread clean.
	PlaceholdersLeft int         `json:"placeholders_left"`
	CleanSeconds     float64     `json:"clean_s"`
	RateLimited      RateLimited `json:"rate_limited"`
	// With two worker processes: each one's chat.update calls (its
	// /metrics), and Slack's chat.update allowance for one workspace over
	// the span from the first to the last chat.update that went through
	// (its burst plus its rate times the span).
	UpdatesByWorker []int   `json:"updates_by_worker,omitempty"`
	UpdateSpan      float64 `json:"update_span_s,omitempty"`
	UpdateAllowance float64 `json:"update_allowance,omitempty"`
	Error           string  `json:"error,omitempty"`
}

// Noisy is the noisy-neighbour phase.
type Noisy struct {
	QuietTenants  int         `json:"quiet_tenants"`
	QuietRate     float64     `json:"quiet_rate"`
	FloodTenants  int         `json:"flood_tenants"`
	FloodRate     float64     `json:"flood_rate"`
	FloodChannels int         `json:"flood_channels"`
	QuietLLMMs    float64     `json:"quiet_llm_ms"`
	FloodLLMMs    float64     `json:"flood_llm_ms"`
	LLMSlots      int         `json:"llm_slots"`
	Workers       int         `json:"workers"`
	Alone         NoisyWindow `json:"alone"`
	During        NoisyWindow `json:"during"`
	// Flood mentions asked and answered; FloodDrainSeconds is the flood's
	// end → its last answer.
	FloodMentions     int         `json:"flood_mentions"`
	FloodAnswered     int         `json:"flood_answered"`
	FloodDrainSeconds float64     `json:"flood_drain_s"`
	Duplicates        int         `json:"duplicates"`
	Lost              int         `json:"lost"`
	PlaceholdersLeft  int         `json:"placeholders_left"`
	RateLimited       RateLimited `json:"rate_limited"`
	LoadAvg           float64     `json:"load_avg"`
	Error             string      `json:"error,omitempty"`
}

// NoisyWindow is the quiet tenants' questions asked in one window.
type NoisyWindow struct {
	Seconds   float64 `json:"s"`
	Questions int     `json:"questions"`
	Answered  int     `json:"answered"`
	// Answer is question → final answer; Feedback question → first bot write.
	Answer   Dist `json:"answer"`
	Feedback Dist `json:"feedback"`
	// LLM requests in flight at the fake LLM over the window, by kind.
	LLMQuiet InFlight `json:"llm_quiet"`
	LLMFlood InFlight `json:"llm_flood"`
	// FloodAnswered flood answers landed in the window.
	FloodAnswered int `json:"flood_answered"`
	// SlotWaitMs is the mean wait for an LLM slot of the requests that
	// started in the window (konstruct_llm_slot_wait_seconds).
	SlotWaitMs float64 `json:"slot_wait_ms"`
}

// InFlight is a count of requests in flight over a window.
type InFlight struct {
	Mean float64 `json:"mean"`
	Peak int     `json:"peak"`
}

// Daemon metrics the Slack-limits phases read.
const (
	metricSlackCalls   = "konstruct_slack_api_calls_total"
	metricSlackLimited = "konstruct_slack_api_rate_limited_total"
	metricSlotWaitSum  = "konstruct_llm_slot_wait_seconds_sum"
	metricSlotWaitN    = "konstruct_llm_slot_wait_seconds_count"
)

// stageHistograms are the daemon's own timings of a message's stages: the
// realistic phase reports their means (where the time goes).
var stageHistograms = []struct{ name, metric string }{
	{"route (every message)", "konstruct_route_latency_seconds"},
	{"enqueue → worker start", "konstruct_queue_latency_seconds"},
	{"LLM request → last token", "konstruct_llm_latency_seconds"},
	{"event → final answer", "konstruct_reply_latency_seconds"},
}

// stageMeans returns the mean of each stage histogram between two scrapes, in ms.
func stageMeans(before, after map[string]float64) []StageMean {
	var out []StageMean
	for _, h := range stageHistograms {
		n := after[h.metric+"_count"] - before[h.metric+"_count"]
		if n <= 0 {
			continue
		}
		out = append(out, StageMean{Stage: h.name, N: int(n), MeanMs: round3((after[h.metric+"_sum"] - before[h.metric+"_sum"]) / n * 1000)})
	}
	return out
}

// StageMean is the daemon's mean time of one stage over a phase
// (its /metrics histograms).
type StageMean struct {
	Stage  string  `json:"stage"`
	N      int     `json:"n"`
	MeanMs float64 `json:"mean_ms"`
}

// Slack's chat.update tier in slacksim (slacksim/ratelimit.go): 50 a
// minute per workspace, bursts of 20.
const (
	slackUpdatePerMinute = 50
	slackUpdateBurst     = 20
)

// floodPersona marks the agents of the flooding tenants: the noisy phase's
// fake LLM answers them slowly.
const floodPersona = "Slow on purpose: a flooding tenant of the benchmark."

// limitsRun is the run of the Slack-limits phases: a runner of its own
// (emulator with rate limits on, database, Redis prefix) and the Web API
// counter in front of its emulator.
type limitsRun struct {
	r   *runner // the limits' own runner
	api *apiCounter
	lim *Limits
	// the seeded workspaces of each phase
	real              []slacksim.WorkspaceSpec
	burstWS, sharedWS slacksim.WorkspaceSpec
	quiet, flood      []slacksim.WorkspaceSpec
	all               []slacksim.WorkspaceSpec
}

// limits runs the Slack-limits phases on a runner of their own, so that
// the other phases and their figures stay as they are: slacksim with
// Slack's rate limits on, the daemon's default Slack budgets, a private
// database and Redis prefix.
func (r *runner) limits(ctx context.Context) {
	o := r.o
	lim := &Limits{}
	r.rep.Limits = lim
	fail := func(format string, args ...any) {
		lim.Error = fmt.Sprintf(format, args...)
		r.log("Slack-limits phases: %s", lim.Error)
	}
	lo := o
	lo.OutDir = filepath.Join(o.OutDir, "limits")
	if err := os.MkdirAll(lo.OutDir, 0o755); err != nil {
		fail("%v", err)
		return
	}
	lr := newRunner(lo)
	lr.log = r.log
	// Slack as it limits: 429 + Retry-After past each method's tier. Bot
	// echo stays off, as in the other phases.
	lr.simOpts = []slacksim.Option{slacksim.WithRateLimits(true), slacksim.WithBotEcho(false)}
	defer lr.cleanup()
	if err := lr.setup(ctx); err != nil {
		fail("setup: %v", err)
		return
	}
	api, err := startAPICounter(lr.sim.URL())
	if err != nil {
		fail("%v", err)
		return
	}
	lr.defer_(api.close)
	lr.env = withEnv(lr.env, "KONSTRUCT_SLACK_API_URL="+api.url)
	l := &limitsRun{r: lr, api: api, lim: lim}
	if err := l.seed(ctx); err != nil {
		fail("seed: %v", err)
		return
	}

	// Realistic and burst: one `konstruct run`.
	env := lr.env
	if o.Profile {
		if lr.pprofAddr, err = freeAddr(); err != nil {
			fail("%v", err)
			return
		}
		env = withEnv(env, "KONSTRUCT_BENCH_PPROF="+lr.pprofAddr)
		defer func() { lim.Profile, lim.ProfileTop = lr.rep.Profile, lr.rep.ProfileTop }()
	}
	p, took, err := lr.spawnRole(ctx, "run", env, lr.logFile, l.all, daemonStartBound)
	if err != nil {
		fail("start the daemon: %v", err)
		return
	}
	r.log("Slack-limits phases: slacksim with Slack's rate limits, the daemon on its default budgets; %d sockets open in %v",
		len(l.all)*connectionsPerWorkspace, took.Round(time.Millisecond))
	l.realistic(ctx, lr.httpAddr)
	l.lim.Burst = l.burst(ctx, "burst", l.burst1(), []string{lr.httpAddr}, nil)
	l.lim.Burst.Processes = "konstruct run"
	if err := p.stop(daemonStopGrace); err != nil {
		r.log("Slack-limits daemon stop: %v", err)
	}

	if !o.Limits.SkipShared && ctx.Err() == nil {
		l.lim.Shared = l.sharedPhase(ctx)
	}
	if !o.Limits.SkipNoisy && ctx.Err() == nil {
		l.lim.Noisy = l.noisy(ctx)
	}
}

// seed registers every workspace of the phases with the CLI: the realistic
// phase's (5 per tenant), one for the burst and one for the two workers
// (each with channels and people), the quiet and the flooding tenants'.
func (l *limitsRun) seed(ctx context.Context) error {
	r, lo := l.r, l.r.o.Limits
	t := time.Now()
	var err error
	if l.real, err = r.seed(ctx, lo.RealisticWorkspaces, 5, "r"); err != nil {
		return err
	}
	one, err := r.seed(ctx, 2, 1, "b")
	if err != nil {
		return err
	}
	l.burstWS, l.sharedWS = one[0], one[1]
	if l.quiet, err = r.seed(ctx, lo.NoisyQuiet, 1, "q"); err != nil {
		return err
	}
	if l.flood, err = r.seedAs(ctx, lo.NoisyFloods, 1, "f", floodPersona); err != nil {
		return err
	}
	l.all = slices.Concat(l.real, one, l.quiet, l.flood)
	r.log("Slack-limits phases: seeded %d workspaces with the CLI in %v", len(l.all), time.Since(t).Round(time.Millisecond))
	return nil
}

// peopleAndChannels adds channels and people to a workspace.
func (l *limitsRun) peopleAndChannels(ws slacksim.WorkspaceSpec, channels, people int) (chans, users []string) {
	for i := range channels {
		id := fmt.Sprintf("C%sX%03d", ws.TeamID[1:], i)
		l.r.sim.AddChannel(ws.TeamID, id, fmt.Sprintf("team-%d", i), false)
		chans = append(chans, id)
	}
	for i := range people {
		id := fmt.Sprintf("U%sP%03d", ws.TeamID[1:], i)
		l.r.sim.AddUser(ws.TeamID, id, fmt.Sprintf("person%d", i))
		users = append(users, id)
	}
	return chans, users
}

// realistic plays Slack's event rate over many workspaces, mostly chatter.
func (l *limitsRun) realistic(ctx context.Context, addr string) {
	r, lo := l.r, l.r.o.Limits
	re := &Realistic{Workspaces: len(l.real), MentionShare: lo.RealisticMentionShare, Seconds: lo.RealisticPhase.Seconds()}
	l.lim.Realistic = re
	r.log("realistic phase: %d env/s over %d workspaces for %v, %.0f%% mentions", lo.RealisticRate, len(l.real), lo.RealisticPhase, lo.RealisticMentionShare*100)
	before, mb := l.api.snapshot(), scrapeAll(ctx, addr)
	res := r.drive(ctx, drive{tgt: newTarget("konstruct", l.real), phase: "realistic", rate: lo.RealisticRate, dur: lo.RealisticPhase,
		mentionEvery: every(lo.RealisticMentionShare), keepChatter: true})
	re.AckRow = AckRow{Target: "konstruct", Rate: lo.RealisticRate, Actual: round1(res.actual), Sent: res.sent, Acked: len(res.acks), Redeliveries: res.redel, Ack: distOf(res.acks)}
	left := r.waitAnswered(ctx, res.mentions, time.Now().Add(r.o.Drain))
	time.Sleep(max(time.Second, 2*r.llmTime)) // a duplicate or a late chatter answer would show
	re.Mentions, re.Answered = len(res.mentions), len(res.mentions)-left
	fb, ov, _ := r.latencies(res.mentions)
	re.Feedback, re.Overhead = distOf(fb), distOf(ov)
	re.Chatter = len(res.chatter)
	r.botMu.Lock()
	for _, c := range res.chatter {
		if r.threads[threadKey(c.team, c.channel, c.ts)] != nil {
			re.ChatterAnswered++
		}
	}
	r.botMu.Unlock()
	re.Stages = stageMeans(mb[addr], scrapeAll(ctx, addr)[addr])
	re.RateLimited = l.rateLimited(ctx, before, mb, addr)
	re.LoadAvg = loadAvg()
	l.integrity(res.mentions)
	// The same load against slack-go clients that only ack, in workspaces
	// of their own the daemon does not serve.
	ws := r.addWorkspaces(len(l.real), "slack-go")
	stopRef, err := r.startSlackGo(ctx, ws)
	if err != nil {
		r.log("realistic phase: slack-go reference: %v", err)
	} else {
		ref := r.drive(ctx, drive{tgt: newTarget("slack-go", ws), phase: "realistic-slack-go", rate: lo.RealisticRate, dur: lo.RealisticPhase,
			mentionEvery: every(lo.RealisticMentionShare)})
		re.Reference = &AckRow{Target: "slack-go", Rate: lo.RealisticRate, Actual: round1(ref.actual), Sent: ref.sent, Acked: len(ref.acks), Redeliveries: ref.redel, Ack: distOf(ref.acks)}
		r.log("realistic phase: slack-go reference: ack p50 %.3f p99 %.3f ms", re.Reference.Ack.P50, re.Reference.Ack.P99)
	}
	stopRef()
	if r.pprofAddr != "" {
		// The CPU profile, in a repeat of the load of its own.
		d := max(time.Second, lo.RealisticPhase/2)
		r.log("realistic phase: profiling the daemon under the same load for %v", d)
		prof := r.profile("realistic", d)
		again := r.drive(ctx, drive{tgt: newTarget("konstruct", l.real), phase: "realistic-profile", rate: lo.RealisticRate, dur: d,
			mentionEvery: every(lo.RealisticMentionShare)})
		prof()
		r.waitAnswered(ctx, again.mentions, time.Now().Add(r.o.Drain))
		l.integrity(again.mentions)
	}
	r.log("realistic phase: sent %d (%.0f/s), ack p50 %.3f p99 %.3f ms; %d/%d answered, feedback p99 %.1f ms, overhead p99 %.1f ms; %d chatter answered; 429s %v (daemon %v)",
		re.Sent, re.Actual, re.Ack.P50, re.Ack.P99, re.Answered, re.Mentions, re.Feedback.P99, re.Overhead.P99, re.ChatterAnswered, re.RateLimited.Slack, re.RateLimited.Daemon)
}

// answerChunks is the fake LLM's fixed answer: words, then the marker.
func answerChunks(words int) []string {
	out := make([]string, 0, words)
	for i := range words - 1 {
		out = append(out, fmt.Sprintf("word%d ", i+1))
	}
	return append(out, answerMarker)
}

// onceCount is what the threads of some mentions show.
type onceCount struct {
	once, dup, lost int
	// left counts threads that still show a bot message other than the answer.
	left int
}

// integrity reads each mention's thread: exactly one answer (a finished
// bot message with the marker) and nothing else from the bot. Duplicates
// and lost answers count in the Slack-limits phases' totals.
func (l *limitsRun) integrity(ms []*mention) onceCount {
	var c onceCount
	for _, m := range ms {
		bots := l.r.sim.Thread(m.team, m.channel, m.ts).BotReplies()
		answers, other := 0, ""
		for _, b := range bots {
			if !b.Streaming && strings.Contains(b.Text, answerMarker) {
				answers++
			} else {
				other = b.Text
			}
		}
		switch {
		case answers == 1 && len(bots) == 1:
			c.once++
		case answers > 1:
			c.dup++
		case answers == 0:
			c.lost++
			if len(l.lim.LostDetail) < 5 {
				l.lim.LostDetail = append(l.lim.LostDetail, fmt.Sprintf("%s %s %s (%s): %d bot messages%s", m.team, m.channel, m.ts, m.phase, len(bots), quoted(other)))
			}
		}
		if len(bots) > answers {
			c.left++
		}
	}
	l.lim.Mentions += len(ms)
	l.lim.Duplicates += c.dup
	l.lim.Lost += c.lost
	return c
}

// rateLimited is the 429s since the snapshots: slacksim's, and the
// daemons' at addrs.
func (l *limitsRun) rateLimited(ctx context.Context, before apiCounts, mb map[string]map[string]float64, addrs ...string) RateLimited {
	d := l.api.since(before)
	rl := RateLimited{Slack: d.Limited, Calls: d.Calls, Daemon: map[string]int{}}
	ma := scrapeAll(ctx, addrs...)
	for _, addr := range addrs {
		for k, v := range ma[addr] {
			method, ok := strings.CutPrefix(k, "429:")
			if !ok {
				continue
			}
			if n := int(v - mb[addr][k]); n > 0 {
				rl.Daemon[method] += n
			}
		}
	}
	return rl
}

// scrapeAll reads the daemons' /metrics at addrs, keeping what the
// Slack-limits phases use: per address, Slack calls by method (key: the
// method), 429s by method (key: "429:" + method), and the LLM slot wait's
// sum and count.
func scrapeAll(ctx context.Context, addrs ...string) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for _, addr := range addrs {
		m, err := scrape(ctx, addr)
		if err != nil {
			continue
		}
		v := map[string]float64{}
		for series, x := range m {
			switch {
			case strings.HasPrefix(series, metricSlackCalls+"{"):
				v[labelValue(series, "method")] += x
			case strings.HasPrefix(series, metricSlackLimited+"{"):
				v["429:"+labelValue(series, "method")] += x
			}
		}
		v[metricSlotWaitSum] = sum(m, metricSlotWaitSum)
		v[metricSlotWaitN] = sum(m, metricSlotWaitN)
		for _, h := range stageHistograms {
			v[h.metric+"_sum"] = sum(m, h.metric+"_sum")
			v[h.metric+"_count"] = sum(m, h.metric+"_count")
		}
		out[addr] = v
	}
	return out
}

// labelValue returns the value of one label of a series as /metrics writes it.
func labelValue(series, label string) string {
	_, rest, ok := strings.Cut(series, label+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// loadAvg is the machine's 1-minute load average (0 when unknown).
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return f
}
