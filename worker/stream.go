package worker

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/bot"
	"github.com/konstruct/konstruct/internal/wait"
)

// Slack methods whose budget is shared per workspace.
const (
	methodUpdate = "chat.update"
	methodAppend = "chat.appendStream"
)

// budgets holds, per workspace, the write budget every reply streaming in
// it shares in this process, and how long Slack asked us to back off.
type budgets struct {
	perMinute float64

	mu    sync.Mutex
	teams map[string]*teamBudget
}

func newBudgets(perMinute float64) *budgets {
	return &budgets{perMinute: perMinute, teams: map[string]*teamBudget{}}
}

// teamBudget is one workspace's budget. Intermediate edits take a token
// only when at least reserveTokens are left, so final edits, which wait for
// their token, are served first when the budget runs short.
type teamBudget struct {
	limiters map[string]*rate.Limiter

	mu      sync.Mutex
	blocked map[string]time.Time // method → until when Slack asked us to wait
}

const (
	budgetBurst   = 10 // Slack tolerates short bursts above Tier 3 (~50/min); a burst of questions should not queue
	reserveTokens = 2
)

func (b *budgets) team(teamID string) *teamBudget {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.teams[teamID]
	if t == nil {
		per := rate.Limit(b.perMinute / 60)
		t = &teamBudget{
			limiters: map[string]*rate.Limiter{
				methodUpdate: rate.NewLimiter(per, budgetBurst),
				// appendStream is Tier 4 (~100/min): twice the edit budget.
				methodAppend: rate.NewLimiter(2*per, budgetBurst),
			},
			blocked: map[string]time.Time{},
		}
		b.teams[teamID] = t
	}
	return t
}

// block records a Retry-After: no call of that method until it passed.
func (t *teamBudget) block(method string, d time.Duration) {
	d = max(d, time.Second)
	t.mu.Lock()
	defer t.mu.Unlock()
	if until := time.Now().Add(d); until.After(t.blocked[method]) {
		t.blocked[method] = until
	}
}

func (t *teamBudget) blockedFor(method string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return time.Until(t.blocked[method])
}

// tryIntermediate reports whether an intermediate write may go now. It never
// waits: a skipped edit is simply folded into the next one.
func (t *teamBudget) tryIntermediate(method string) bool {
	if t.blockedFor(method) > 0 {
		return false
	}
	lim := t.limiters[method]
	if lim.Tokens() < reserveTokens {
		return false
	}
	return lim.Allow()
}

// maxFinalWait bounds how long a final write waits for the budget: past
// it the write goes anyway (the debt holds intermediate edits back), since
// an answer held back is worse than a possible 429, which is then honoured.
const maxFinalWait = 2 * time.Second

// waitFinal waits until a write that must land may go: after any
// Retry-After, and for its share of the budget up to maxFinalWait.
func (t *teamBudget) waitFinal(ctx context.Context, method string) error {
	if d := t.blockedFor(method); d > 0 {
		if !wait.Sleep(ctx, d) {
			return ctx.Err()
		}
	}
	if lim := t.limiters[method]; lim != nil {
		if d := lim.Reserve().Delay(); d > 0 && !wait.Sleep(ctx, min(d, maxFinalWait)) {
			return ctx.Err()
		}
	}
	return nil
}

// streamer shows a growing answer in Slack while the model writes it.
type streamer interface {
	add(delta string)
	// close stops the background writes and waits for them.
	close()
}

const tick = 200 * time.Millisecond

// editor streams by editing one message (the placeholder) with chat.update,
// at most once per EditInterval and only when the workspace's budget allows:
// skipped edits fold into the next one, and the final edit is delivered
// separately, so under a 429 storm nothing but the final edit is owed.
type editor struct {
	w                 *Server
	tb                *teamBudget
	team, channel, ts string
	mu                sync.Mutex
	text              string
	stop, done        chan struct{}
}

func (w *Server) newEditor(ctx context.Context, team, channel, ts string) *editor {
	e := &editor{w: w, tb: w.budgets.team(team), team: team, channel: channel, ts: ts,
		stop: make(chan struct{}), done: make(chan struct{})}
	go e.run(ctx)
	return e
}

func (e *editor) add(delta string) {
	e.mu.Lock()
	e.text += delta
	e.mu.Unlock()
}

func (e *editor) close() {
	close(e.stop)
	<-e.done
}

func (e *editor) run(ctx context.Context) {
	defer close(e.done)
	t := time.NewTicker(tick)
	defer t.Stop()
	var shown string
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.stop:
			return
		case <-t.C:
		}
		e.mu.Lock()
		text := e.text
		e.mu.Unlock()
		if strings.TrimSpace(text) == "" || text == shown || time.Since(last) < e.w.cfg.EditInterval {
			continue
		}
		if !e.tb.tryIntermediate(methodUpdate) {
			continue
		}
		view := e.w.streamView(text)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := e.w.deps.Slack.Update(cctx, e.team, e.channel, e.ts, bot.Msg{Text: plainText(view), Markdown: view})
		cancel()
		last = time.Now()
		if err != nil {
			if d, ok := bot.RetryAfter(err); ok {
				e.tb.block(methodUpdate, d)
			} else if ctx.Err() == nil {
				e.w.log.LogAttrs(ctx, slog.LevelDebug, "intermediate edit failed", slog.String("error", err.Error()))
			}
			continue
		}
		shown = text
	}
}

// streamView is what a message shows while its answer streams: the first
// part, with any code block left open closed so the rest renders.
func (w *Server) streamView(text string) string {
	if utf8.RuneCountInString(text) <= w.cfg.PartChars {
		return closeOpenFence(strings.TrimSpace(text))
	}
	// Only the start matters; don't re-split a long answer on every tick.
	head := text[:byteOffsetOfRune(text, w.cfg.PartChars+1)]
	return splitMarkdown(head, w.cfg.PartChars)[0]
}

// nativeStreamer streams with chat.startStream/appendStream: the stream
// starts at the first text (its ts is recorded before anything else), the
// placeholder is then deleted, and appends are coalesced like edits. The
// streamed message carries at most one part; the rest of a long answer is
// delivered at the end.
type nativeStreamer struct {
	w                      *Server
	tb                     *teamBudget
	rec                    *record
	team, channel, thread  string
	recipient, placeholder string
	mu                     sync.Mutex
	pending                string // received, not sent yet
	sent                   int    // runes sent into the stream
	ts                     string // the streamed message, once started
	failed                 bool   // streaming gave up: the final delivery edits instead
	stop, done             chan struct{}
	lastAppend             time.Time
}

func (w *Server) newNativeStreamer(ctx context.Context, rec *record, team, channel, thread, recipient, placeholder string) *nativeStreamer {
	n := &nativeStreamer{w: w, tb: w.budgets.team(team), rec: rec, team: team, channel: channel, thread: thread,
		recipient: recipient, placeholder: placeholder, stop: make(chan struct{}), done: make(chan struct{})}
	go n.run(ctx)
	return n
}

func (n *nativeStreamer) add(delta string) {
	n.mu.Lock()
	n.pending += delta
	n.mu.Unlock()
}

func (n *nativeStreamer) close() {
	close(n.stop)
	<-n.done
}

// streamTS returns the streamed message's ts ("" if none was started).
func (n *nativeStreamer) streamTS() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ts
}

func (n *nativeStreamer) run(ctx context.Context) {
	defer close(n.done)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.stop:
			return
		case <-t.C:
		}
		n.mu.Lock()
		pending, ts, sent, failed := n.pending, n.ts, n.sent, n.failed
		n.mu.Unlock()
		if failed || strings.TrimSpace(pending) == "" {
			continue
		}
		// The stream holds one part at most; the rest comes at the end.
		room := n.w.cfg.PartChars - sent
		if room <= 0 {
			continue
		}
		chunk := pending
		if utf8.RuneCountInString(chunk) > room {
			chunk = chunk[:byteOffsetOfRune(chunk, room)]
		}
		if ts == "" {
			n.startStream(ctx, chunk)
			continue
		}
		if time.Since(n.lastAppend) < n.w.cfg.EditInterval || !n.tb.tryIntermediate(methodAppend) {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := n.w.deps.Slack.AppendStream(cctx, n.team, n.channel, ts, chunk)
		cancel()
		n.lastAppend = time.Now()
		if err != nil {
			if d, ok := bot.RetryAfter(err); ok {
				n.tb.block(methodAppend, d)
				continue
			}
			if ctx.Err() == nil {
				n.w.log.LogAttrs(ctx, slog.LevelWarn, "append to stream failed; finishing with an edit", slog.String("error", err.Error()))
				n.mu.Lock()
				n.failed = true
				n.mu.Unlock()
			}
			continue
		}
		n.mu.Lock()
		n.pending = n.pending[len(chunk):]
		n.sent += utf8.RuneCountInString(chunk)
		n.mu.Unlock()
	}
}

func (n *nativeStreamer) startStream(ctx context.Context, chunk string) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ts, err := n.w.deps.Slack.StartStream(cctx, n.team, n.channel, n.thread, n.recipient, chunk)
	cancel()
	n.lastAppend = time.Now()
	if err != nil {
		if d, ok := bot.RetryAfter(err); ok {
			n.tb.block(methodAppend, d)
			return
		}
		if ctx.Err() == nil {
			n.w.log.LogAttrs(ctx, slog.LevelWarn, "start stream failed; streaming into the placeholder instead", slog.String("error", err.Error()))
			n.mu.Lock()
			n.failed = true
			n.mu.Unlock()
		}
		return
	}
	// Record the stream before anything else: a retry must edit this
	// message, never start a second one.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	err = n.rec.set(rctx, "stream_ts", ts)
	rcancel()
	n.mu.Lock()
	n.ts = ts
	n.pending = n.pending[len(chunk):]
	n.sent = utf8.RuneCountInString(chunk)
	n.mu.Unlock()
	if err != nil {
		n.w.log.LogAttrs(ctx, slog.LevelWarn, "record stream ts", slog.String("error", err.Error()))
	}
	// The streamed message replaces the placeholder.
	if n.placeholder != "" {
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		if err := n.w.deps.Slack.Delete(dctx, n.team, n.channel, n.placeholder); err != nil {
			n.w.log.LogAttrs(ctx, slog.LevelDebug, "delete placeholder", slog.String("error", err.Error()))
		}
		dcancel()
	}
}

// finalEdit replaces a message's content and does not give up on rate
// limits: it waits for the workspace's budget and for any Retry-After, and
// tries again until ctx ends. Other transient errors are retried a few times.
func (w *Server) finalEdit(ctx context.Context, team, channel, ts, md string) error {
	tb := w.budgets.team(team)
	m := bot.Msg{Text: plainText(md), Markdown: md}
	failures := 0
	for {
		if err := tb.waitFinal(ctx, methodUpdate); err != nil {
			return err
		}
		err := w.deps.Slack.Update(ctx, team, channel, ts, m)
		if err == nil {
			return nil
		}
		if d, ok := bot.RetryAfter(err); ok {
			tb.block(methodUpdate, d)
			continue
		}
		if !transient(err) || ctx.Err() != nil {
			return err
		}
		failures++
		if failures >= 4 {
			return err
		}
		if !wait.Sleep(ctx, time.Duration(failures)*time.Second) {
			return err
		}
	}
}

// postOnce posts a message in the thread without ever posting it twice: on
// an answer that did not come back (timeout, 5xx, connection lost) it looks
// in the thread for the message before trying again.
func (w *Server) postOnce(ctx context.Context, team, channel, thread string, m bot.Msg, after string) (string, error) {
	failures := 0
	for {
		ts, err := w.deps.Slack.PostMessage(ctx, team, channel, thread, m)
		if err == nil {
			return ts, nil
		}
		if d, ok := bot.RetryAfter(err); ok {
			if !wait.Sleep(ctx, max(d, time.Second)) {
				return "", err
			}
			continue
		}
		if !transient(err) || ctx.Err() != nil {
			return "", err
		}
		failures++
		if failures >= 4 {
			return "", err
		}
		if !wait.Sleep(ctx, time.Duration(failures)*time.Second) {
			return "", err
		}
		// Did it land anyway?
		if msgs, rerr := w.deps.Slack.Replies(ctx, team, channel, thread); rerr == nil {
			for i := len(msgs) - 1; i >= 0; i-- {
				x := msgs[i]
				if x.BotID != "" && tsBefore(after, x.TS) && strings.TrimSpace(x.Text) == strings.TrimSpace(m.Text) {
					return x.TS, nil
				}
			}
		}
	}
}

// transient reports whether trying again may help.
func transient(err error) bool {
	if bot.SlackErrorString(err) != "" {
		return false // Slack answered: it will answer the same
	}
	switch konstruct.ErrorCode(err) {
	case konstruct.EUNAVAILABLE, konstruct.ETIMEOUT, konstruct.ERATELIMIT, konstruct.EINTERNAL:
		return true
	}
	return false
}
