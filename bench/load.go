package bench

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/konstruct/konstruct/slacksim"
)

// target is a set of workspaces whose app is one of the measured programs.
type target struct {
	name string
	ws   []slacksim.WorkspaceSpec
	apps map[string]bool
}

func newTarget(name string, ws []slacksim.WorkspaceSpec) *target {
	t := &target{name: name, ws: ws, apps: map[string]bool{}}
	for _, w := range ws {
		t.apps[w.AppID] = true
	}
	return t
}

// ackRec collects the acks of one phase's target.
type ackRec struct {
	apps  map[string]bool
	mu    sync.Mutex
	lat   []time.Duration
	redel int
}

// mention is one question asked in a thread of its own.
type mention struct {
	target  string
	phase   string
	team    string
	channel string
	ts      string
	at      time.Time // just before the human's post
}

func threadKey(team, channel, ts string) string { return team + "|" + channel + "|" + ts }

// threadRec is what the bot wrote in one thread, as seen by OnBotMessage.
type threadRec struct {
	first, last time.Time
	writes      int
}

// drive is one bounded load phase.
type drive struct {
	tgt   *target
	phase string
	rate  int // envelopes per second (a mention is two: app_mention and message)
	dur   time.Duration
	// mentionEvery makes every n-th post a mention (1: all of them; 0: none).
	mentionEvery int
	// ackWait bounds the wait for the phase's acks after its last post
	// (default 5 s: Slack's redelivery window and a bit).
	ackWait time.Duration
	// keepChatter keeps the chatter posts (driveResult.chatter), to check
	// that none was answered.
	keepChatter bool
}

// driveResult is what a phase sent and the acks it got.
type driveResult struct {
	sent     int
	actual   float64
	elapsed  time.Duration
	acks     []time.Duration
	redel    int
	mentions []*mention
	chatter  []*mention // with drive.keepChatter
	errors   int
}

// drive plays the load: posts paced to the envelope rate, spread round-robin
// over the target's workspaces, then waits (bounded) for their acks.
func (r *runner) drive(ctx context.Context, d drive) driveResult {
	rec := &ackRec{apps: d.tgt.apps, lat: make([]time.Duration, 0, int(float64(d.rate)*d.dur.Seconds())+64)}
	r.cur.Store(rec)
	defer r.cur.Store(nil)

	senders := 1 + d.rate/2500
	var (
		sentEnv atomic.Int64
		errs    atomic.Int64
		mu      sync.Mutex
		ments   []*mention
		chatter []*mention
		wg      sync.WaitGroup
	)
	start := time.Now()
	for g := range senders {
		wg.Go(func() {
			rate := float64(d.rate) / float64(senders)
			var sent, post int
			defer func() { sentEnv.Add(int64(sent)) }()
			for ctx.Err() == nil {
				el := time.Since(start)
				if el >= d.dur {
					return
				}
				due := int(el.Seconds() * rate)
				for sent < due {
					i := post*senders + g
					post++
					p, err := r.post(d.tgt, d.phase, i, d.mentionEvery)
					sent += p.envelopes
					if err != nil {
						errs.Add(1)
						continue
					}
					switch {
					case p.mention != nil:
						mu.Lock()
						ments = append(ments, p.mention)
						mu.Unlock()
					case p.chatter != nil && d.keepChatter:
						mu.Lock()
						chatter = append(chatter, p.chatter)
						mu.Unlock()
					}
				}
				time.Sleep(500 * time.Microsecond)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	res := driveResult{sent: int(sentEnv.Load()), elapsed: elapsed, mentions: ments, chatter: chatter, errors: int(errs.Load())}
	res.actual = float64(res.sent) / elapsed.Seconds()

	// The acks of this phase: wait until every envelope is acked, bounded
	// by Slack's redelivery window and a bit.
	deadline := time.Now().Add(cmp.Or(d.ackWait, 5*time.Second))
	for time.Now().Before(deadline) && ctx.Err() == nil {
		rec.mu.Lock()
		n := len(rec.lat)
		rec.mu.Unlock()
		if n >= res.sent {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	rec.mu.Lock()
	res.acks, res.redel = rec.lat, rec.redel
	rec.lat = nil
	rec.mu.Unlock()

	r.mentMu.Lock()
	r.mentions = append(r.mentions, ments...)
	r.mentMu.Unlock()
	return res
}

// posted is one post of the load: a mention (answered by the bot) or
// channel chatter (acked and ignored), and the envelopes it caused.
type posted struct {
	mention   *mention
	chatter   *mention // the chatter post, when it is one (target and at unused)
	envelopes int      // a mention is two: app_mention and message
}

// post makes post i of a phase over the target's workspaces, round-robin:
// every mentionEvery-th one (0: none) mentions the bot, the rest is chatter.
// The mentions are spread over every workspace: workspace i%n mentions the
// bot in one round of mentionEvery, each workspace in another round (a plain
// i%mentionEvery would put every mention in the workspaces whose index is a
// multiple of gcd(n, mentionEvery) — with 50 workspaces and every 50th post,
// all of them in the first, where Slack's per-channel budget then paces the
// answers at one a second).
func (r *runner) post(tgt *target, phase string, i, mentionEvery int) (posted, error) {
	n := len(tgt.ws)
	ws, round := tgt.ws[i%n], i/n
	user := ws.UserIDs[round%len(ws.UserIDs)]
	if mentionEvery > 0 && (round+i%n)%mentionEvery == 0 {
		at := time.Now()
		ts, err := r.sim.Mention(ws.TeamID, ws.GeneralChannelID, user, fmt.Sprintf("bench question %d from %s", i, phase), "")
		if err != nil {
			return posted{}, err
		}
		return posted{envelopes: 2, mention: &mention{target: tgt.name, phase: phase, team: ws.TeamID, channel: ws.GeneralChannelID, ts: ts, at: at}}, nil
	}
	ts, err := r.sim.Post(ws.TeamID, ws.GeneralChannelID, user, fmt.Sprintf("bench chatter %d", i), "")
	if err != nil {
		return posted{}, err
	}
	return posted{envelopes: 1, chatter: &mention{phase: phase, team: ws.TeamID, channel: ws.GeneralChannelID, ts: ts}}, nil
}

// answered reports whether a mention's thread shows its final answer.
func (r *runner) answered(m *mention) bool {
	v := r.sim.Thread(m.team, m.channel, m.ts)
	for _, b := range v.BotReplies() {
		if b.Streaming {
			continue
		}
		if m.target == "bolt" || strings.Contains(b.Text, answerMarker) {
			return true
		}
	}
	return false
}

// waitAnswered polls until every mention is answered or the deadline passes;
// it returns how many are still waiting.
func (r *runner) waitAnswered(ctx context.Context, ms []*mention, deadline time.Time) int {
	pending := append([]*mention(nil), ms...)
	for {
		left := pending[:0]
		for _, m := range pending {
			if !r.answered(m) {
				left = append(left, m)
			}
		}
		pending = left
		if len(pending) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return len(pending)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// latencies returns, for answered mentions, event → first bot write and
// event → last bot write minus the fake LLM's own time.
func (r *runner) latencies(ms []*mention) (feedback, overhead []time.Duration, lastWrite time.Time) {
	r.botMu.Lock()
	defer r.botMu.Unlock()
	for _, m := range ms {
		t := r.threads[threadKey(m.team, m.channel, m.ts)]
		if t == nil {
			continue
		}
		feedback = append(feedback, t.first.Sub(m.at))
		overhead = append(overhead, t.last.Sub(m.at)-r.llmTime)
		if t.last.After(lastWrite) {
			lastWrite = t.last
		}
	}
	return feedback, overhead, lastWrite
}
