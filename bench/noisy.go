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
	"sync"
	"time"

	"github.com/konstruct/konstruct/llm/llmfake"
	"github.com/konstruct/konstruct/slacksim"
)

// noisy measures the quiet tenants alone, then while the flooding tenants
// flood, on a daemon of its own whose one LLM provider has NoisySlots
// slots, and a fake LLM that answers the flooding tenants slowly.
func (l *limitsRun) noisy(ctx context.Context) *Noisy {
	r, lo := l.r, l.r.o.Limits
	n := &Noisy{QuietTenants: len(l.quiet), QuietRate: lo.NoisyQuietRate, FloodTenants: len(l.flood), FloodRate: lo.NoisyFloodRate,
		FloodChannels: lo.NoisyFloodChannels, QuietLLMMs: ms(r.llmTime), FloodLLMMs: ms(lo.NoisyFloodLLM), LLMSlots: lo.NoisySlots,
		Workers: cmp.Or(lo.NoisyWorkers, r.o.WorkerConcurrency)}
	fail := func(format string, args ...any) *Noisy {
		n.Error = fmt.Sprintf(format, args...)
		r.log("noisy-neighbour phase: %s", n.Error)
		return n
	}

	// The fake LLM: the quiet tenants' answers take the run's LLM time,
	// the flooding tenants' NoisyFloodLLM; every request is logged.
	chunks := answerChunks(r.o.AnswerWords)
	floodFirst := max(0, lo.NoisyFloodLLM-time.Duration(len(chunks)-1)*r.o.LLMTokenDelay)
	var reqs llmLog
	fake := llmfake.New(llmfake.WithoutRecording(), llmfake.WithHandler(func(req llmfake.ChatRequest) llmfake.Reply {
		flood := false
		for _, m := range req.Messages {
			if m.Role == "system" && strings.Contains(m.Content, floodPersona) {
				flood = true
			}
		}
		first := r.o.LLMFirstToken
		if flood {
			first = floodFirst
		}
		reqs.add(flood, first+time.Duration(len(chunks)-1)*r.o.LLMTokenDelay)
		return llmfake.Reply{Chunks: chunks, FirstTokenDelay: first, TokenDelay: r.o.LLMTokenDelay}
	}))
	defer fake.Close()

	addr, err := freeAddr()
	if err != nil {
		return fail("%v", err)
	}
	lf, err := os.Create(filepath.Join(r.o.OutDir, "daemon-noisy.log"))
	if err != nil {
		return fail("%v", err)
	}
	defer lf.Close()
	env := withEnv(r.env, "KONSTRUCT_HTTP_ADDR="+addr, "KONSTRUCT_STATE_DIR="+filepath.Join(r.o.OutDir, "state-noisy"),
		"KONSTRUCT_LLM_BASE_URL="+fake.URL(), "KONSTRUCT_LLM_MAX_CONCURRENCY="+strconv.Itoa(lo.NoisySlots),
		"KONSTRUCT_WORKER_CONCURRENCY="+strconv.Itoa(n.Workers))
	p, _, err := r.spawnRole(ctx, "run", env, lf, l.all, daemonStartBound)
	if err != nil {
		return fail("start the daemon: %v", err)
	}
	defer func() {
		if err := p.stop(daemonStopGrace); err != nil {
			r.log("noisy-neighbour daemon stop: %v", err)
		}
	}()
	type floodWS struct {
		ws              slacksim.WorkspaceSpec
		channels, users []string
	}
	var floods []floodWS
	for _, ws := range l.flood {
		ch, ppl := l.peopleAndChannels(ws, lo.NoisyFloodChannels, 5*lo.NoisyFloodChannels/2)
		floods = append(floods, floodWS{ws, ch, ppl})
	}
	r.log("noisy-neighbour phase: %d quiet tenants at %.0f questions/s in all, %v alone, then %v with %d tenants flooding at %.0f mentions/s each (model %v); llm.max_concurrency %d, worker.concurrency %d",
		len(l.quiet), lo.NoisyQuietRate, lo.NoisyAlone, lo.NoisyFlood, len(l.flood), lo.NoisyFloodRate, lo.NoisyFloodLLM, lo.NoisySlots, n.Workers)

	var (
		mu          sync.Mutex
		floodMs     []*mention
		quietAlone  []*mention
		quietDuring []*mention
	)
	// pace asks one question every 1/rate s for d, until ctx ends.
	pace := func(rate float64, d time.Duration, ask func(k int)) {
		start := time.Now()
		for k := 0; ; k++ {
			at := start.Add(time.Duration(float64(k) / rate * float64(time.Second)))
			if at.Sub(start) >= d || !sleepCtx(ctx, time.Until(at)) {
				return
			}
			ask(k)
		}
	}
	quiet := func(into *[]*mention, phase string) func(int) {
		return func(k int) {
			ws := l.quiet[k%len(l.quiet)]
			at := time.Now()
			ts, err := r.sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[(k/len(l.quiet))%len(ws.UserIDs)], fmt.Sprintf("quiet question %d", k), "")
			if err != nil {
				return
			}
			mu.Lock()
			*into = append(*into, &mention{target: "konstruct", phase: phase, team: ws.TeamID, channel: ws.GeneralChannelID, ts: ts, at: at})
			mu.Unlock()
		}
	}
	before, mb := l.api.snapshot(), scrapeAll(ctx, addr)

	// Alone.
	aloneStart := time.Now()
	pace(lo.NoisyQuietRate, lo.NoisyAlone, quiet(&quietAlone, "noisy-alone"))
	r.waitAnswered(ctx, quietAlone, time.Now().Add(r.o.Drain))
	aloneEnd := time.Now()
	m1 := scrapeAll(ctx, addr)

	// During the flood.
	floodStart := time.Now()
	var load sync.WaitGroup
	for _, f := range floods {
		load.Go(func() {
			pace(lo.NoisyFloodRate, lo.NoisyFlood, func(k int) {
				ch, who := f.channels[k%len(f.channels)], f.users[k%len(f.users)]
				at := time.Now()
				ts, err := r.sim.Mention(f.ws.TeamID, ch, who, fmt.Sprintf("flood question %d", k), "")
				if err != nil {
					return
				}
				mu.Lock()
				floodMs = append(floodMs, &mention{target: "konstruct", phase: "noisy-flood", team: f.ws.TeamID, channel: ch, ts: ts, at: at})
				mu.Unlock()
			})
		})
	}
	load.Go(func() { pace(lo.NoisyQuietRate, lo.NoisyFlood, quiet(&quietDuring, "noisy-during")) })
	load.Wait()
	floodEnd := time.Now()
	r.waitAnswered(ctx, quietDuring, time.Now().Add(r.o.Drain))
	m2 := scrapeAll(ctx, addr)
	duringEnd := time.Now()
	// Every flood answer: the model's time over its slots, and a margin.
	bound := time.Duration(float64(len(floodMs))*lo.NoisyFloodLLM.Seconds()/float64(lo.NoisySlots)*1.5*float64(time.Second)) + time.Minute
	if left := r.waitAnswered(ctx, floodMs, time.Now().Add(bound)); left > 0 {
		r.log("noisy-neighbour phase: %d of %d flood mentions unanswered after %v", left, len(floodMs), bound.Round(time.Second))
	}
	time.Sleep(max(time.Second, 2*r.llmTime))

	window := func(qs []*mention, from, to time.Time, ma, mz map[string]map[string]float64) NoisyWindow {
		w := NoisyWindow{Seconds: round1(to.Sub(from).Seconds()), Questions: len(qs), LLMQuiet: reqs.inFlight(false, from, to), LLMFlood: reqs.inFlight(true, from, to)}
		var ans, fb []time.Duration
		r.botMu.Lock()
		for _, m := range qs {
			t := r.threads[threadKey(m.team, m.channel, m.ts)]
			if t == nil || !r.answered(m) {
				continue
			}
			w.Answered++
			ans, fb = append(ans, t.last.Sub(m.at)), append(fb, t.first.Sub(m.at))
		}
		for _, m := range floodMs {
			if t := r.threads[threadKey(m.team, m.channel, m.ts)]; t != nil && !t.last.Before(from) && t.last.Before(to) && r.answered(m) {
				w.FloodAnswered++
			}
		}
		r.botMu.Unlock()
		w.Answer, w.Feedback = distOf(ans), distOf(fb)
		if cnt := mz[addr][metricSlotWaitN] - ma[addr][metricSlotWaitN]; cnt > 0 {
			w.SlotWaitMs = round1((mz[addr][metricSlotWaitSum] - ma[addr][metricSlotWaitSum]) / cnt * 1000)
		}
		return w
	}
	n.Alone = window(quietAlone, aloneStart, aloneEnd, mb, m1)
	n.During = window(quietDuring, floodStart, duringEnd, m1, m2)
	n.FloodMentions = len(floodMs)
	var lastFlood time.Time
	r.botMu.Lock()
	for _, m := range floodMs {
		if t := r.threads[threadKey(m.team, m.channel, m.ts)]; t != nil && r.answered(m) {
			n.FloodAnswered++
			if t.last.After(lastFlood) {
				lastFlood = t.last
			}
		}
	}
	r.botMu.Unlock()
	if !lastFlood.IsZero() {
		n.FloodDrainSeconds = round1(lastFlood.Sub(floodEnd).Seconds())
	}
	all := slices.Concat(quietAlone, quietDuring, floodMs)
	c := l.integrity(all)
	n.Duplicates, n.Lost, n.PlaceholdersLeft = c.dup, c.lost, c.left
	n.RateLimited = l.rateLimited(ctx, before, mb, addr)
	n.LoadAvg = loadAvg()
	r.log("noisy-neighbour phase: quiet answer p50 %.0f → %.0f ms, p99 %.0f → %.0f ms, feedback p99 %.1f → %.1f ms (alone → during the flood); flood %d/%d answered, the last %.1f s after the flood; LLM in flight during: quiet %.1f, flood %.1f (peak %d); %d lost, %d duplicates",
		n.Alone.Answer.P50, n.During.Answer.P50, n.Alone.Answer.P99, n.During.Answer.P99, n.Alone.Feedback.P99, n.During.Feedback.P99,
		n.FloodAnswered, n.FloodMentions, n.FloodDrainSeconds, n.During.LLMQuiet.Mean, n.During.LLMFlood.Mean, n.During.LLMFlood.Peak, n.Lost, n.Duplicates)
	return n
}

// llmLog keeps when each request to the noisy phase's fake LLM ran.
type llmLog struct {
	mu   sync.Mutex
	reqs []llmReq
}

type llmReq struct {
	flood      bool
	start, end time.Time
}

func (l *llmLog) add(flood bool, d time.Duration) {
	now := time.Now()
	l.mu.Lock()
	l.reqs = append(l.reqs, llmReq{flood, now, now.Add(d)})
	l.mu.Unlock()
}

// inFlight is how many requests of a kind were in flight between from and
// to: on average, and at most.
func (l *llmLog) inFlight(flood bool, from, to time.Time) InFlight {
	if !to.After(from) {
		return InFlight{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	type ev struct {
		at time.Time
		d  int
	}
	var evs []ev
	var busy time.Duration
	for _, q := range l.reqs {
		if q.flood != flood || !q.end.After(from) || !q.start.Before(to) {
			continue
		}
		s, e := q.start, q.end
		if s.Before(from) {
			s = from
		}
		if e.After(to) {
			e = to
		}
		busy += e.Sub(s)
		evs = append(evs, ev{s, 1}, ev{e, -1})
	}
	slices.SortFunc(evs, func(a, b ev) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.d - b.d // ends before starts at the same instant
	})
	cur, peak := 0, 0
	for _, e := range evs {
		cur += e.d
		peak = max(peak, cur)
	}
	return InFlight{Mean: round1(busy.Seconds() / to.Sub(from).Seconds()), Peak: peak}
}
