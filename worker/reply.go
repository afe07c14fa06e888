package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/trace"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/markdown"
	"github.com/konstruct/konstruct/internal/wait"
	"github.com/konstruct/konstruct/llm"
)

// What a person reads when a reply fails. Short, human, no Go errors.
const (
	textLLMDown    = "Sorry — I couldn't reach the language model. Please try again in a moment."
	textLLMBusy    = "Sorry — the language model is busy right now. Please try again in a moment."
	textLLMAuth    = "Sorry — the language model refused my credentials. Please ask an administrator to check the LLM settings."
	textLLMInvalid = "Sorry — the language model could not handle this request. Please try rephrasing or starting a new thread."
	textNoAgent    = "Sorry — no assistant is set up for this workspace yet. Please ask an administrator to configure one."
	textInternal   = "Sorry — something went wrong on my side. Please try again in a moment."
	textOrphaned   = "Sorry — I was interrupted while answering. Please ask again."
	textCutOffNote = "_(The answer was cut off: the language model stopped responding.)_"
	textTooLong    = "_(The answer was cut here: it was longer than I may post in one reply.)_"
	textLostThread = "Sorry — I couldn't post my answer here. Please try again."
	textStopped    = "_(Stopped: the answer was cut short on request.)_"
)

// The buttons' labels.
const (
	labelVoteUp   = "👍"
	labelVoteDown = "👎"
	labelStop     = "Stop"
)

// errorTexts are left out of the thread history given to the model.
var errorTexts = []string{textLLMDown, textLLMBusy, textLLMAuth, textLLMInvalid, textNoAgent, textInternal, textOrphaned, textLostThread}

// llmErrorText maps an LLM failure to what a person reads.
func llmErrorText(err error) string {
	switch konstruct.ErrorCode(err) {
	case konstruct.EUNAVAILABLE, konstruct.ETIMEOUT:
		return textLLMDown
	case konstruct.ERATELIMIT:
		return textLLMBusy
	case konstruct.EUNAUTHORIZED:
		return textLLMAuth
	case konstruct.EINVALID:
		return textLLMInvalid
	}
	return textInternal
}

// errTooLong stops a model whose answer passed the cap.
var errTooLong = errors.New("the answer passed its length cap")

// errLeaseLost cancels a reply whose lease another process took over.
var errLeaseLost = errors.New("the reply's lease was lost")

// errStopped cancels the LLM request of a reply whose asker pressed Stop.
var errStopped = errors.New("the asker stopped the answer")

// reply is one answer in one thread, a state machine over its durable
// state st. Its stage moves forward only:
//
//	queued → placeholder → streaming → final → done (recorded)
//
// with two ways out of any stage: failed (an error text in place of the
// answer, then done; see fail) and handed back (the task is returned to the
// queue with st as it is, and the next delivery resumes from there).
// Handle drives one delivery through the stages; the janitor resumes a
// crashed one at finish.
type reply struct {
	w     *Server
	job   konstruct.ReplyJob // nil message fields for a janitor's reply
	d     konstruct.Delivery
	st    konstruct.ReplyState
	lease konstruct.Lease
	log   *slog.Logger
}

// Handle answers one reply job: what the reply:generate task runs (tests
// call it directly). nil means the thread shows the answer; an error
// wrapping konstruct.ErrNoRetry means it shows a human error for a failure
// retrying cannot fix; a *konstruct.DeferError means another delivery holds
// the reply; any other error hands the task back for a retry, which resumes
// in the same messages.
func (w *Server) Handle(ctx context.Context, job konstruct.ReplyJob, d konstruct.Delivery) (err error) {
	m := &job.Message
	post := m.Post()
	if !post.Valid() {
		return konstruct.NoRetry(konstruct.Errorf(konstruct.EINVALID, "reply job without tenant, team, channel or ts"))
	}
	if w.cfg.Tracer != nil {
		var span trace.Span
		if ctx, span = w.startReply(ctx, &job, d); span != nil {
			defer func() { endReply(span, err) }()
		}
	}
	r := &reply{w: w, job: job, d: d, log: w.log.With(slog.String("tenant_id", m.TenantID), slog.String("team_id", m.TeamID),
		slog.String("channel_id", m.ChannelID), slog.String("ts", m.TS), slog.String("event_id", m.EventID))}
	r.st = konstruct.ReplyState{Post: post, ThreadTS: m.ReplyThreadTS(), EventID: m.EventID, PlaceholderTS: job.PlaceholderTS}
	if d.Retry == 0 && !job.EnqueuedAt.IsZero() && w.cfg.Metrics != nil {
		w.cfg.Metrics.QueueLatency.Observe(time.Since(job.EnqueuedAt).Seconds())
	}

	// What the model writes may mention only whom the asker mentioned
	// (the Slack edge neutralises the rest).
	ctx = konstruct.WithAsker(ctx, m.User, m.Text)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	lease, err := w.deps.States.AcquireReply(ctx, post, func() { cancel(errLeaseLost) })
	if konstruct.ErrorCode(err) == konstruct.ECONFLICT {
		// Another delivery (or a crashed one, until its lease runs out).
		return &konstruct.DeferError{After: 10 * time.Second, Reason: "another delivery of this reply is running"}
	}
	if err != nil {
		return r.fail(ctx, err)
	}
	r.lease = lease
	defer func() {
		rctx, rcancel := detached(ctx, 5*time.Second)
		lease.Release(rctx)
		rcancel()
	}()

	st, exists, err := w.deps.States.LoadReply(ctx, post)
	if err != nil {
		return r.fail(ctx, err)
	}
	if exists {
		// A redelivery: a second placeholder for the same post must not
		// linger; a reply delivered already is left as it is.
		r.st = st
		r.dropPlaceholder(ctx, job.PlaceholderTS)
		if st.Stage == konstruct.StageDone {
			return nil
		}
	} else {
		r.st.Stage = konstruct.StageQueued
		r.st.PlaceholderTS = "" // claimed below, so that two deliveries keep one
		r.st.Job, r.st.Started = &job, w.cfg.Now()
	}
	if err := lease.Track(ctx); err != nil {
		return r.fail(ctx, err)
	}
	return r.run(ctx)
}

// run moves the reply through its stages until it is done or handed back.
func (r *reply) run(ctx context.Context) error {
	for {
		var err error
		switch r.st.Stage {
		case konstruct.StageQueued:
			err = r.placeholder(ctx)
		case konstruct.StagePlaceholder, konstruct.StageStreaming:
			// A delivery that stopped mid-stream generates again, into the
			// same message.
			err = r.generate(ctx)
		case konstruct.StageFinal:
			return r.finish(ctx, r.st.Text, cmp.Or(r.st.Outcome, konstruct.OutcomeAnswered), nil)
		case konstruct.StageDone:
			return nil
		default:
			err = konstruct.Errorf(konstruct.EINTERNAL, "reply in unknown stage %q", r.st.Stage)
		}
		if err != nil {
			return r.fail(ctx, err)
		}
	}
}

// advance saves the state at its next stage.
func (r *reply) advance(ctx context.Context, stage konstruct.ReplyStage) error {
	r.st.Stage = stage
	return r.w.deps.States.SaveReply(ctx, r.st)
}

// placeholder makes sure the thread shows one placeholder, recorded before
// anything is streamed into it: the one the router recorded, else the
// job's, else one posted now.
func (r *reply) placeholder(ctx context.Context) error {
	if r.st.PlaceholderTS != "" { // the router recorded it
		return r.advance(ctx, konstruct.StagePlaceholder)
	}
	ts, posted := r.job.PlaceholderTS, false
	if ts == "" {
		var err error
		ts, err = r.w.postOnce(ctx, r.st.Post, r.st.ThreadTS, konstruct.Content{Text: konstruct.TextThinking}, r.st.Post.TS, konstruct.PriorityPlaceholder)
		if err != nil {
			return fmt.Errorf("post placeholder: %w", err)
		}
		posted = true
	}
	held, err := r.w.deps.States.ClaimPlaceholder(ctx, r.st.Post, ts)
	if err != nil {
		return err
	}
	if held != ts && posted {
		r.w.deleteQuietly(ctx, r.st.Post, ts)
	}
	r.st.PlaceholderTS = held
	return r.advance(ctx, konstruct.StagePlaceholder)
}

// dropPlaceholder deletes a placeholder the router posted for a post whose
// reply has its own messages already (a duplicate delivery of the post).
func (r *reply) dropPlaceholder(ctx context.Context, ts string) {
	if ts == "" || r.st.PlaceholderTS == "" || ts == r.st.PlaceholderTS || ts == r.st.StreamTS {
		return
	}
	r.w.deleteQuietly(ctx, r.st.Post, ts)
}

// generate streams a new answer into the reply's message and stores it.
func (r *reply) generate(ctx context.Context) error {
	w, m := r.w, &r.job.Message
	agent, err := w.agents.get(ctx, m.TenantID)
	if err != nil {
		switch konstruct.ErrorCode(err) {
		case konstruct.ENOTFOUND, konstruct.EINVALID:
			return r.finish(ctx, textNoAgent, konstruct.OutcomeError, konstruct.NoRetry(err))
		}
		return fmt.Errorf("load agent: %w", err)
	}
	msgs, err := w.prompt(ctx, agent, *m, &r.st, r.job.Alone)
	if err != nil {
		return err
	}
	if err := r.advance(ctx, konstruct.StageStreaming); err != nil {
		return err
	}
	if w.stopped(ctx, r.st.Post) {
		// Stopped before the model was asked (a delivery that resumes).
		return r.stop(ctx, "")
	}

	// The request has its own context: Stop cancels it, and only it.
	lctx, cancelLLM := context.WithCancelCause(ctx)
	defer cancelLLM(nil)
	var span trace.Span
	if w.cfg.Tracer != nil {
		lctx, span = w.cfg.Tracer.Start(lctx, "llm.generate", trace.WithSpanKind(trace.SpanKindClient))
	}
	mt := w.newMeter(m.TenantID, r.log)
	mt.start(ctx, msgs)
	s := w.newStreamer(ctx, r, mt, func() { cancelLLM(errStopped) })
	limit := w.cfg.MaxAnswerMessages * w.cfg.PartChars // characters
	res, err := w.deps.LLM.Stream(lctx, llm.Request{Model: agent.Model, Tenant: m.TenantID, Providers: agent.Providers, Messages: msgs, MaxTokens: w.cfg.MaxAnswerTokens},
		func(d string) error {
			if s.add(d) > limit {
				return errTooLong
			}
			return nil
		})
	if span != nil {
		endLLM(span, agent.Model, res, err, context.Cause(lctx))
	}
	s.close(ctx)
	mt.settle(ctx, res.PromptTokens+res.CompletionTokens)
	r.st.Stats = konstruct.ReplyStats{Model: cmp.Or(res.Model, agent.Model), Provider: res.Provider, PromptTokens: res.PromptTokens,
		CompletionTokens: res.CompletionTokens, TimeToFirstToken: res.TimeToFirstToken, Latency: res.Latency}
	if ctx.Err() != nil {
		// Shut down, or the lease was lost: hand the task back; the next
		// delivery resumes in the same message.
		return context.Cause(ctx)
	}
	if errors.Is(context.Cause(lctx), errStopped) {
		return r.stop(ctx, res.Text)
	}
	if errors.Is(err, errTooLong) {
		// A model that will not stop: what fits, and say it was cut.
		text := res.Text[:markdown.RuneOffset(res.Text, limit-utf8.RuneCountInString(textTooLong)-2)]
		r.st.Text = strings.TrimSpace(text) + "\n\n" + textTooLong
		r.log.LogAttrs(ctx, slog.LevelWarn, "answer cut at its length cap", slog.Int("chars", limit))
		return r.advance(ctx, konstruct.StageFinal)
	}
	if err != nil {
		text := llmErrorText(err)
		var ie *llm.InterruptedError
		if errors.As(err, &ie) && strings.TrimSpace(ie.Partial.Text) != "" {
			text = strings.TrimSpace(ie.Partial.Text) + "\n\n" + textCutOffNote
		}
		r.log.LogAttrs(ctx, slog.LevelWarn, "llm failed", slog.String("error", err.Error()), slog.String("provider", res.Provider))
		return r.finish(ctx, text, konstruct.OutcomeError, konstruct.NoRetry(err))
	}
	r.st.Text = strings.TrimSpace(res.Text)
	w.deps.States.ObserveReply(ctx, res.Latency)
	return r.advance(ctx, konstruct.StageFinal)
}

// stop makes what the model wrote before the asker pressed Stop the final
// answer, marked as stopped.
func (r *reply) stop(ctx context.Context, partial string) error {
	r.st.Text = textStopped
	if p := strings.TrimSpace(partial); p != "" {
		r.st.Text = p + "\n\n" + textStopped
	}
	r.st.Outcome = konstruct.OutcomeStopped
	r.log.LogAttrs(ctx, slog.LevelInfo, "answer stopped by the asker", slog.Int("chars", utf8.RuneCountInString(partial)))
	return r.advance(ctx, konstruct.StageFinal)
}

// ref is what the reply's buttons carry: its post and who asked.
func (r *reply) ref() konstruct.AnswerRef {
	p := r.st.Post
	return konstruct.AnswerRef{TeamID: p.TeamID, ChannelID: p.ChannelID, TS: p.TS, Asker: r.job.Message.User}
}

// stopButtons go under an answer while it streams.
func (r *reply) stopButtons() []konstruct.Button {
	return []konstruct.Button{{ActionID: konstruct.ActionStop, Text: labelStop, Value: r.ref().String()}}
}

// voteButtons go under a final answer (stopped ones too).
func (r *reply) voteButtons() []konstruct.Button {
	v := r.ref().String()
	return []konstruct.Button{
		{ActionID: konstruct.ActionVoteUp, Text: labelVoteUp, Value: v},
		{ActionID: konstruct.ActionVoteDown, Text: labelVoteDown, Value: v},
	}
}

// finish puts text in the reply's messages (the answer, or a human error
// when cause is set), marks the reply done, records it and, for an answer,
// engages the thread as the tenant's policy says. It returns nil for an
// answer, cause for an error (konstruct.NoRetry-wrapped when retrying
// cannot help). An answer (stopped or not) carries the 👍/👎 buttons.
func (r *reply) finish(ctx context.Context, text, outcome string, cause error) error {
	w := r.w
	fctx, cancel := context.WithTimeout(ctx, w.cfg.FinalizeTimeout)
	defer cancel()
	answered := outcome == konstruct.OutcomeAnswered || outcome == konstruct.OutcomeStopped
	var buttons []konstruct.Button
	if answered {
		buttons = r.voteButtons()
	}
	if err := w.deliver(fctx, &r.st, text, buttons); err != nil {
		if ctx.Err() == nil && !transient(err) {
			// Slack refuses the message for good (channel gone, token
			// revoked): nothing a retry or the janitor could do.
			r.log.LogAttrs(ctx, slog.LevelError, "reply undeliverable", slog.String("error", err.Error()))
			r.done(ctx, konstruct.OutcomeError, err)
			return konstruct.NoRetry(fmt.Errorf("deliver reply: %w", err))
		}
		return fmt.Errorf("deliver reply: %w", err)
	}
	r.done(ctx, outcome, cause)
	if answered {
		r.engage(ctx)
	}
	return cause
}

// engage marks the thread followed after an answer, for the tenant's
// follow TTL, when its policy auto-follows threads (when the policy cannot
// be read: as by default, threads.engaged_ttl).
func (r *reply) engage(ctx context.Context) {
	ctx, cancel := detached(ctx, 5*time.Second)
	defer cancel()
	post := r.st.Post
	var ttl time.Duration
	if pol, err := r.w.deps.Policies.Policy(ctx, post.TenantID); err == nil {
		if pol.Follow != konstruct.FollowAuto {
			return
		}
		ttl = pol.FollowTTL
	}
	if err := r.w.deps.States.EngageFor(ctx, post.TenantID, post.ChannelID, r.st.ThreadTS, ttl); err != nil {
		r.log.LogAttrs(ctx, slog.LevelWarn, "engage thread", slog.String("error", err.Error()))
	}
}

// done marks the reply done and records it: the thread shows its final
// text, so this runs to the end even if ctx ends meanwhile.
func (r *reply) done(ctx context.Context, outcome string, cause error) {
	ctx, cancel := detached(ctx, 15*time.Second)
	defer cancel()
	r.st.Stage, r.st.Outcome, r.st.ErrorCode, r.st.Text = konstruct.StageDone, outcome, errorCode(cause), ""
	if r.w.cfg.Tracer != nil {
		traceOutcome(ctx, outcome, r.st.ErrorCode)
	}
	if err := r.w.deps.States.SaveReply(ctx, r.st); err != nil {
		// The thread is right; a retry would only re-edit it the same way.
		r.log.LogAttrs(ctx, slog.LevelWarn, "finish reply state", slog.String("error", err.Error()))
	}
	r.w.record(ctx, r, outcome)
}

func errorCode(err error) string {
	if err == nil {
		return ""
	}
	return konstruct.ErrorCode(err)
}

// fail decides what a failure means: a context that ended hands the task
// back; a transient error is retried, unless this was the last chance, when
// the reply ends with a human error in place of the placeholder.
func (r *reply) fail(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, konstruct.ErrNoRetry) {
		return err
	}
	if !r.lastChance() {
		return err
	}
	if r.st.MainTS() == "" {
		return konstruct.NoRetry(err) // nothing in the thread to resolve
	}
	text := textInternal
	if konstruct.ErrorCode(err) == konstruct.ENOTFOUND {
		text = textLostThread
	}
	if ferr := r.finish(ctx, text, konstruct.OutcomeError, err); !errors.Is(ferr, err) {
		// Not even the error text could be shown: the janitor tries again.
		r.log.LogAttrs(ctx, slog.LevelError, "resolve failed reply", slog.String("error", ferr.Error()))
	}
	return konstruct.NoRetry(err)
}

// lastChance reports whether no retry will follow: the queue's last
// attempt, or a job older than MaxAge.
func (r *reply) lastChance() bool {
	return r.d.LastTry() || (!r.job.EnqueuedAt.IsZero() && time.Since(r.job.EnqueuedAt) > r.w.cfg.MaxAge)
}

// deliver puts text into the reply's messages: the first part in the main
// message, the others in follow-ups, editing the follow-ups a previous
// delivery recorded and posting (then recording) only the missing ones.
// The buttons go under the last part (where a reader ends).
func (w *Server) deliver(ctx context.Context, st *konstruct.ReplyState, text string, buttons []konstruct.Button) error {
	post := st.Post
	parts := markdown.Split(text, w.cfg.PartChars)
	if len(parts) == 0 {
		parts = []string{textInternal}
	}
	if n := w.cfg.MaxAnswerMessages; len(parts) > n {
		// Seams (reopened code fences) can make a capped answer one part
		// longer: the last message says where it was cut.
		last := parts[n-1]
		room := w.cfg.PartChars - utf8.RuneCountInString(textTooLong) - 2
		if utf8.RuneCountInString(last) > room {
			last = markdown.CloseOpenFence(last[:markdown.RuneOffset(last, room-4)])
		}
		parts = append(parts[:n-1], strings.TrimSpace(last)+"\n\n"+textTooLong)
	}
	if st.StreamTS != "" {
		w.stopStream(ctx, post, st.StreamTS)
	}
	last := len(parts) - 1
	buttonsOf := func(i int) []konstruct.Button {
		if i == last {
			return buttons
		}
		return nil
	}
	if err := w.finalEdit(ctx, post, st.MainTS(), konstruct.Content{Markdown: parts[0], Buttons: buttonsOf(0)}, maxFinalWait); err != nil {
		overBudget := errors.Is(err, errOverBudget)
		if !overBudget && konstruct.SlackCode(err) != "message_not_found" {
			return fmt.Errorf("edit answer: %w", err)
		}
		// The placeholder is gone (someone deleted it), or chat.update's
		// budget would keep the person waiting: the answer goes in a new
		// message (chat.postMessage, budgeted per channel), and the
		// placeholder it replaces is deleted under chat.delete's own budget
		// — now, or by the janitor when that budget allows.
		old := st.MainTS()
		ts, perr := w.postOnce(ctx, post, st.ThreadTS, konstruct.Content{Markdown: parts[0], Buttons: buttonsOf(0)}, old, konstruct.PriorityFinal)
		if perr != nil {
			return fmt.Errorf("post answer: %w", perr)
		}
		if st.StreamTS != "" {
			st.StreamTS = ts
		} else {
			st.PlaceholderTS = ts
		}
		if overBudget {
			st.Cleanup = append(st.Cleanup, old)
		}
		if err := w.deps.States.SaveReply(ctx, *st); err != nil {
			return err
		}
	}
	after := st.MainTS()
	for i, part := range parts[1:] {
		if i < len(st.FollowUps) {
			if err := w.finalEdit(ctx, post, st.FollowUps[i], konstruct.Content{Markdown: part, Buttons: buttonsOf(i + 1)}, 0); err != nil {
				return fmt.Errorf("edit follow-up: %w", err)
			}
			after = st.FollowUps[i]
			continue
		}
		ts, err := w.postOnce(ctx, post, st.ThreadTS, konstruct.Content{Markdown: part, Buttons: buttonsOf(i + 1)}, after, konstruct.PriorityFinal)
		if err != nil {
			return fmt.Errorf("post follow-up: %w", err)
		}
		st.FollowUps = append(st.FollowUps, ts)
		// Recorded before anything else: a retry must edit it, never post it again.
		sctx, cancel := detached(ctx, 5*time.Second)
		err = w.deps.States.SaveReply(sctx, *st)
		cancel()
		if err != nil {
			return err
		}
		after = ts
	}
	// A longer earlier attempt left more follow-ups than this text needs.
	if keep := len(parts) - 1; len(st.FollowUps) > keep {
		for _, ts := range st.FollowUps[keep:] {
			if err := w.deps.Slack.Delete(ctx, post.TeamID, post.ChannelID, ts); err != nil && konstruct.SlackCode(err) != "message_not_found" {
				return fmt.Errorf("delete follow-up: %w", err)
			}
		}
		st.FollowUps = st.FollowUps[:keep]
		if err := w.deps.States.SaveReply(ctx, *st); err != nil {
			return err
		}
	}
	w.cleanup(ctx, st)
	return nil
}

// cleanup deletes the placeholders an answer replaced (st.Cleanup), as far
// as chat.delete's budget allows within a short wait; the janitor deletes
// the rest later. Never before the answer is in the thread.
func (w *Server) cleanup(ctx context.Context, st *konstruct.ReplyState) {
	if len(st.Cleanup) == 0 {
		return
	}
	left := st.Cleanup[:0:0]
	for _, ts := range st.Cleanup {
		err := w.write(ctx, st.Post, methodDelete, konstruct.PriorityFinal, maxFinalWait, func(ctx context.Context) error {
			return w.deps.Slack.Delete(ctx, st.Post.TeamID, st.Post.ChannelID, ts)
		}, nil)
		if err != nil && konstruct.SlackCode(err) != "message_not_found" {
			left = append(left, ts)
		}
	}
	if len(left) == len(st.Cleanup) {
		return
	}
	st.Cleanup = left
	sctx, cancel := detached(ctx, 5*time.Second)
	defer cancel()
	if err := w.deps.States.SaveReply(sctx, *st); err != nil {
		w.log.LogAttrs(ctx, slog.LevelWarn, "record clean-up", slog.String("error", err.Error()))
	}
}

// record writes the replies row, counts the reply and logs one line with
// its timings (what an operator greps for). A failure to write the row is
// logged, never shown: the answer is already in the thread.
func (w *Server) record(ctx context.Context, r *reply, outcome string) {
	st, m := &r.st, &r.job.Message
	since := time.Duration(0) // what the asker waited for the final answer
	switch {
	case !m.ReceivedAt.IsZero():
		since = time.Since(m.ReceivedAt)
	case !m.EventTime.IsZero():
		since = time.Since(m.EventTime)
	}
	row := konstruct.Reply{
		TenantID: st.Post.TenantID, TeamID: st.Post.TeamID, ChannelID: st.Post.ChannelID, ThreadTS: st.ThreadTS,
		MessageTS: st.MainTS(), EventID: cmp.Or(st.EventID, st.Post.String()),
		Model: st.Stats.Model, Provider: st.Stats.Provider, PromptTokens: st.Stats.PromptTokens, CompletionTokens: st.Stats.CompletionTokens,
		TimeToFirstToken: st.Stats.TimeToFirstToken, Latency: st.Stats.Latency, Outcome: outcome, Error: st.ErrorCode,
		UserID: m.User, PostTS: st.Post.TS, AnswerTime: since,
	}
	var err error
	for try := range 3 {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = w.deps.Records.RecordReply(rctx, row)
		cancel()
		if err == nil || !wait.Sleep(ctx, time.Duration(try+1)*200*time.Millisecond) {
			break
		}
	}
	if err != nil {
		r.log.LogAttrs(ctx, slog.LevelError, "record reply", slog.String("error", err.Error()))
	}
	w.cfg.Metrics.Reply(outcome, since)
	level := slog.LevelInfo
	if outcome != konstruct.OutcomeAnswered && outcome != konstruct.OutcomeStopped {
		level = slog.LevelWarn
	}
	r.log.LogAttrs(ctx, level, "reply",
		slog.String("outcome", outcome),
		slog.String("error_code", row.Error),
		slog.String("provider", row.Provider),
		slog.String("model", row.Model),
		slog.Int("prompt_tokens", row.PromptTokens),
		slog.Int("completion_tokens", row.CompletionTokens),
		slog.Int64("ttft_ms", row.TimeToFirstToken.Milliseconds()),
		slog.Int64("llm_ms", row.Latency.Milliseconds()),
		slog.Int64("since_event_ms", since.Milliseconds()),
	)
}

// detached is the one way to make a cleanup write that must outlive ctx
// (release a lease, record what the thread already shows): ctx's values, a
// deadline of its own, no cancellation.
func detached(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}
