package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/slacksim"
)

// burstLoad is a burst of mentions into one workspace.
type burstLoad struct {
	ws       slacksim.WorkspaceSpec
	channels []string
	people   []string
}

func (l *limitsRun) burst1() burstLoad {
	lo := l.r.o.Limits
	ch, ppl := l.peopleAndChannels(l.burstWS, lo.BurstChannels, lo.BurstPeople)
	return burstLoad{ws: l.burstWS, channels: ch, people: ppl}
}

// burstAnswerBound and cleanBound bound the waits for a burst's answers
// and for its placeholders to be gone (chat.delete's budget: 50 a minute).
const (
	burstAnswerBound = 2 * time.Minute
	cleanBound       = 3 * time.Minute
)

// burst asks BurstMentions questions in BurstWindow into one workspace,
// spread over its channels and people, then waits for every answer and
// for every placeholder to be gone. addrs are the daemons' HTTP addresses
// (their 429 counts); workers, when set, are the worker processes'.
func (l *limitsRun) burst(ctx context.Context, phase string, b burstLoad, addrs, workers []string) *Burst {
	r, lo := l.r, l.r.o.Limits
	res := &Burst{Mentions: lo.BurstMentions, Seconds: lo.BurstWindow.Seconds(), Channels: len(b.channels), People: len(b.people)}
	r.log("%s phase: %d mentions in %v into one workspace, over %d channels from %d people", phase, lo.BurstMentions, lo.BurstWindow, len(b.channels), len(b.people))
	before, mb := l.api.snapshot(), scrapeAll(ctx, addrs...)
	wb := scrapeAll(ctx, workers...)
	watch := &threadWatch{r: r}
	wctx, stop := context.WithCancel(ctx)
	var watching sync.WaitGroup
	watching.Go(func() { watch.run(wctx) })
	defer func() { stop(); watching.Wait() }()

	start := time.Now()
	var ms []*mention
	for k := range lo.BurstMentions {
		if !sleepCtx(ctx, time.Until(start.Add(time.Duration(k)*lo.BurstWindow/time.Duration(lo.BurstMentions)))) {
			break
		}
		ch, who := b.channels[k%len(b.channels)], b.people[k%len(b.people)]
		at := time.Now()
		ts, err := r.sim.Mention(b.ws.TeamID, ch, who, fmt.Sprintf("%s question %d: how do I reset my password?", phase, k), "")
		if err != nil {
			res.Error = fmt.Sprintf("post mention: %v", err)
			continue
		}
		m := &mention{target: "konstruct", phase: phase, team: b.ws.TeamID, channel: ch, ts: ts, at: at}
		ms = append(ms, m)
		watch.add(m)
	}
	last := time.Now()
	if left := r.waitAnswered(ctx, ms, time.Now().Add(burstAnswerBound)); left > 0 {
		r.log("%s phase: %d of %d mentions unanswered after %v", phase, left, len(ms), burstAnswerBound)
	}
	cleanAt := watch.waitClean(ctx, time.Now().Add(cleanBound))
	if !cleanAt.IsZero() {
		res.CleanSeconds = round3(cleanAt.Sub(last).Seconds())
	}
	time.Sleep(max(time.Second, 2*r.llmTime))
	stop()
	watching.Wait()

	var completion, feedback, linger []time.Duration
	r.botMu.Lock()
	for _, w := range watch.all() {
		t := r.threads[threadKey(w.m.team, w.m.channel, w.m.ts)]
		if t == nil || w.answered.IsZero() {
			continue
		}
		completion = append(completion, t.last.Sub(w.m.at))
		feedback = append(feedback, t.first.Sub(w.m.at))
		if w.anew {
			res.PostedAnew++
			if !w.clean.IsZero() {
				linger = append(linger, max(0, w.clean.Sub(t.last)))
			}
		}
		if strings.HasPrefix(w.placeholder, "Queued") {
			res.Queued++
		}
	}
	r.botMu.Unlock()
	res.Completion, res.Feedback, res.Linger = distOf(completion), distOf(feedback), distOf(linger)
	c := l.integrity(ms)
	res.AnsweredOnce, res.PlaceholdersLeft = c.once, c.left
	res.RateLimited = l.rateLimited(ctx, before, mb, addrs...)
	res.LoadAvg = loadAvg()
	if len(workers) > 0 {
		wa := scrapeAll(ctx, workers...)
		for _, addr := range workers {
			res.UpdatesByWorker = append(res.UpdatesByWorker, int(wa[addr][`chat.update`]-wb[addr][`chat.update`]))
		}
		ok := l.api.okBetween("chat.update", start, time.Now())
		if len(ok) > 0 {
			res.UpdateSpan = round3(ok[len(ok)-1].Sub(ok[0]).Seconds())
			res.UpdateAllowance = round1(slackUpdateBurst + slackUpdatePerMinute*res.UpdateSpan/60)
		}
	}
	r.log("%s phase: %d/%d answered once, completion p50 %.0f p99 %.0f ms, %d posted anew (placeholder gone p50 %.0f p99 %.0f ms after), %d placeholders left; 429s %v (daemon %v)",
		phase, res.AnsweredOnce, res.Mentions, res.Completion.P50, res.Completion.P99, res.PostedAnew, res.Linger.P50, res.Linger.P99, res.PlaceholdersLeft,
		res.RateLimited.Slack, res.RateLimited.Daemon)
	return res
}

// sharedPhase plays the burst against `konstruct gateway` and two
// `konstruct worker` processes: their chat.update calls share one budget
// in Redis.
func (l *limitsRun) sharedPhase(ctx context.Context) *Burst {
	r, lo := l.r, l.r.o.Limits
	res := &Burst{Processes: "konstruct gateway + 2 × konstruct worker"}
	var addrs, workers []string
	var stops []func()
	defer_ := func(f func()) { stops = append(stops, f) }
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()
	start := func(role, name string, ws []slacksim.WorkspaceSpec) (string, error) {
		addr, err := freeAddr()
		if err != nil {
			return "", err
		}
		lf, err := os.Create(filepath.Join(r.o.OutDir, name+".log"))
		if err != nil {
			return "", err
		}
		r.defer_(func() { _ = lf.Close() })
		env := withEnv(r.env, "KONSTRUCT_HTTP_ADDR="+addr, "KONSTRUCT_STATE_DIR="+filepath.Join(r.o.OutDir, "state-"+name))
		p, _, err := r.spawnRole(ctx, role, env, lf, ws, daemonStartBound)
		if err == nil {
			err = waitHealthy(ctx, p, addr, daemonStartBound)
		}
		if err != nil {
			if p != nil {
				_ = p.stop(daemonStopGrace)
			}
			return "", err
		}
		// Stopped when the phase ends: a process left running would hold
		// sockets of every app, and Slack hands each envelope to one socket.
		defer_(func() {
			if err := p.stop(daemonStopGrace); err != nil {
				r.log("%s stop: %v", name, err)
			}
		})
		addrs = append(addrs, addr)
		return addr, nil
	}
	// Workers first: the gateway's fair admission counts their room.
	for i := range 2 {
		addr, err := start("worker", fmt.Sprintf("worker-%d", i+1), nil)
		if err != nil {
			res.Error = err.Error()
			r.log("two-worker phase: %v", err)
			return res
		}
		workers = append(workers, addr)
	}
	if _, err := start("gateway", "gateway", l.all); err != nil {
		res.Error = err.Error()
		r.log("two-worker phase: %v", err)
		return res
	}
	ch, ppl := l.peopleAndChannels(l.sharedWS, lo.BurstChannels, lo.BurstPeople)
	b := l.burst(ctx, "two-worker", burstLoad{ws: l.sharedWS, channels: ch, people: ppl}, addrs, workers)
	b.Processes = res.Processes
	r.log("two-worker phase: chat.update calls by worker %v (Slack allows %.0f over their %.1f s)", b.UpdatesByWorker, b.UpdateAllowance, b.UpdateSpan)
	return b
}

// waitHealthy waits until the process answers /healthz.
func waitHealthy(ctx context.Context, p *process, addr string, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		if _, err := httpGet(ctx, "http://"+addr+"/healthz", time.Second); err == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited: %w: %s", p.name, p.err, p.tail())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s does not answer on %s after %v", p.name, addr, bound)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// threadWatch polls the threads of a burst's mentions: when each shows its
// answer, whether that answer was posted anew, and when no placeholder is
// left beside it.
type threadWatch struct {
	r      *runner
	pollMu sync.Mutex // one poll at a time: a poll writes the watched fields
	mu     sync.Mutex
	ws     []*watched
}

type watched struct {
	m           *mention
	placeholder string    // the first placeholder's text seen
	answered    time.Time // first poll that saw the answer
	anew        bool      // the answer is a message of its own, never edited (posted past chat.update's budget)
	clean       time.Time // first poll that saw the answer and nothing else from the bot
}

func (w *threadWatch) add(m *mention) {
	w.mu.Lock()
	w.ws = append(w.ws, &watched{m: m})
	w.mu.Unlock()
}

func (w *threadWatch) all() []*watched {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*watched(nil), w.ws...)
}

// poll looks at every thread not clean yet; it returns how many are not.
func (w *threadWatch) poll() int {
	w.pollMu.Lock()
	defer w.pollMu.Unlock()
	now := time.Now()
	pending := 0
	for _, x := range w.all() {
		if !x.clean.IsZero() {
			continue
		}
		bots := w.r.sim.Thread(x.m.team, x.m.channel, x.m.ts).BotReplies()
		answer, others := false, 0
		for _, b := range bots {
			switch {
			case !b.Streaming && strings.Contains(b.Text, answerMarker):
				if !answer && x.answered.IsZero() {
					x.answered, x.anew = now, b.Updates == 0
				}
				answer = true
			default:
				others++
				if x.placeholder == "" && konstruct.IsPlaceholder(b.Text) {
					x.placeholder = strings.TrimSpace(b.Text)
				}
			}
		}
		if answer && others == 0 {
			x.clean = now
			continue
		}
		pending++
	}
	return pending
}

func (w *threadWatch) run(ctx context.Context) {
	for sleepCtx(ctx, 50*time.Millisecond) {
		w.poll()
	}
}

// waitClean waits until every thread is clean (its answer alone), and
// returns when that was (zero: not before the deadline).
func (w *threadWatch) waitClean(ctx context.Context, deadline time.Time) time.Time {
	for {
		if w.poll() == 0 {
			var last time.Time
			for _, x := range w.all() {
				if x.clean.After(last) {
					last = x.clean
				}
			}
			return last
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, 100*time.Millisecond) {
			return time.Time{}
		}
	}
}
