package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/bot"
	"github.com/konstruct/konstruct/internal/wait"
	"github.com/konstruct/konstruct/llm"
)

// What a person reads when a reply fails. Short, human, no Go errors.
const (
	textThinking    = "Thinking..."
	textLLMDown     = "Sorry — I couldn't reach the language model. Please try again in a moment."
	textLLMBusy     = "Sorry — the language model is busy right now. Please try again in a moment."
	textLLMAuth     = "Sorry — the language model refused my credentials. Please ask an administrator to check the LLM settings."
	textLLMInvalid  = "Sorry — the language model could not handle this request. Please try rephrasing or starting a new thread."
	textNoAgent     = "Sorry — no assistant is set up for this workspace yet. Please ask an administrator to configure one."
	textInternal    = "Sorry — something went wrong on my side. Please try again in a moment."
	textOrphaned    = "Sorry — I was interrupted while answering. Please ask again."
	textCutOffNote  = "_(The answer was cut off: the language model stopped responding.)_"
	textLostThread  = "Sorry — I couldn't post my answer here. Please try again."
	placeholderText = textThinking
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

// permanentError marks a failure that retrying will not fix; the placeholder
// has been resolved (or could not be) and the task is not retried.
func permanentError(err error) error {
	return fmt.Errorf("%w (%w)", err, asynq.SkipRetry)
}

// job is one run of Handle.
type job struct {
	konstruct.ReplyJob
	rec   *record
	p     *progress
	start time.Time
	log   *slog.Logger
}

func (j *job) msg() *konstruct.Message { return &j.Message }

// Handle answers one reply job: it is what the reply:generate task runs,
// and tests call it directly. It returns nil when the thread shows the
// answer (or a human error for a failure retrying cannot fix, wrapped with
// asynq.SkipRetry); another error means the task should be retried, and the
// progress record lets the retry resume in the same messages.
func (w *Server) Handle(ctx context.Context, rj konstruct.ReplyJob) (err error) {
	w.inflight.Add(1)
	defer w.inflight.Done()
	m := rj.Message
	if m.TenantID == "" || m.TeamID == "" || m.ChannelID == "" || m.TS == "" {
		return permanentError(konstruct.Errorf(konstruct.EINVALID, "reply job without tenant, team, channel or ts"))
	}
	j := &job{ReplyJob: rj, rec: w.recordFor(w.progressKey(m)), start: time.Now()}
	j.log = w.log.With(slog.String("tenant_id", m.TenantID), slog.String("team_id", m.TeamID),
		slog.String("channel_id", m.ChannelID), slog.String("ts", m.TS), slog.String("event_id", m.EventID))
	if n, ok := asynq.GetRetryCount(ctx); (!ok || n == 0) && !rj.EnqueuedAt.IsZero() && w.cfg.Metrics != nil {
		w.cfg.Metrics.QueueLatency.Observe(time.Since(rj.EnqueuedAt).Seconds())
	}

	token, err := j.rec.lock(ctx)
	if err != nil {
		return w.failed(ctx, j, err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		j.rec.unlock(uctx, token)
		cancel()
	}()

	p, exists, err := j.rec.load(ctx)
	if err != nil {
		return w.failed(ctx, j, err)
	}
	j.p = p
	if p.State == stateDone {
		// Delivered already: a re-delivery is a no-op, except that a second
		// placeholder for the same post must not be left behind.
		w.dropExtraPlaceholder(ctx, j)
		return nil
	}

	// From here on the reply is in flight: heartbeat so the janitor leaves
	// it alone, and keep the lock.
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	hbDone := w.heartbeat(wctx, j.rec, token, cancel)
	defer hbDone()

	if !exists {
		if err := j.rec.set(wctx, "state", stateStarted, "tenant_id", m.TenantID, "team_id", m.TeamID,
			"channel_id", m.ChannelID, "thread_ts", m.ReplyThreadTS(), "event_id", m.EventID); err != nil {
			return w.failed(ctx, j, err)
		}
		p.State = stateStarted
	}
	if err := w.ensurePlaceholder(wctx, j); err != nil {
		return w.failed(ctx, j, err)
	}

	if p.State == stateGenerated {
		return w.deliverGenerated(wctx, ctx, j)
	}
	return w.generate(wctx, ctx, j)
}

// heartbeat refreshes the janitor's deadline and the lock until stopped;
// losing the lock cancels the work.
func (w *Server) heartbeat(ctx context.Context, rec *record, token string, cancel context.CancelCauseFunc) func() {
	every := min(w.cfg.OrphanAfter/4, lockTTL/3)
	_ = rec.heartbeat(ctx)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			_ = rec.heartbeat(ctx)
			if ok, err := rec.extend(ctx, token); err == nil && !ok {
				cancel(errLocked)
				return
			}
		}
	}()
	return func() { close(stop); <-done }
}

// ensurePlaceholder makes sure the reply has one placeholder, recorded
// before anything is streamed into it.
func (w *Server) ensurePlaceholder(ctx context.Context, j *job) error {
	m := j.msg()
	if j.p.PlaceholderTS != "" {
		w.dropExtraPlaceholder(ctx, j)
		return nil
	}
	ts := j.PlaceholderTS
	posted := false
	if ts == "" {
		var err error
		ts, err = w.postOnce(ctx, m.TeamID, m.ChannelID, m.ReplyThreadTS(), bot.Msg{Text: placeholderText}, m.TS)
		if err != nil {
			return fmt.Errorf("post placeholder: %w", err)
		}
		posted = true
	}
	got, err := j.rec.setNX(ctx, "placeholder_ts", ts)
	if err != nil {
		return err
	}
	if got != ts && posted {
		_ = w.deps.Slack.Delete(ctx, m.TeamID, m.ChannelID, ts)
	}
	j.p.PlaceholderTS = got
	return nil
}

// dropExtraPlaceholder deletes a placeholder the router posted for a post
// that already has a reply (a duplicate delivery of the same post).
func (w *Server) dropExtraPlaceholder(ctx context.Context, j *job) {
	if j.PlaceholderTS == "" || j.p.PlaceholderTS == "" || j.PlaceholderTS == j.p.PlaceholderTS || j.PlaceholderTS == j.p.StreamTS {
		return
	}
	m := j.msg()
	if err := w.deps.Slack.Delete(ctx, m.TeamID, m.ChannelID, j.PlaceholderTS); err != nil {
		j.log.LogAttrs(ctx, slog.LevelWarn, "delete duplicate placeholder", slog.String("error", err.Error()))
	}
}

// generate streams a new answer into the reply's message.
func (w *Server) generate(ctx, parent context.Context, j *job) error {
	m := j.msg()
	agent, err := w.agents.get(ctx, m.TenantID)
	if err != nil {
		switch konstruct.ErrorCode(err) {
		case konstruct.ENOTFOUND, konstruct.EINVALID:
			return w.resolve(ctx, parent, j, textNoAgent, konstruct.OutcomeError, err, replyStats{}, true)
		}
		return w.failed(parent, j, fmt.Errorf("load agent: %w", err))
	}

	// A top-level post starts its thread: there is no history to read, and
	// skipping conversations.replies saves a Slack round trip (Tier 3) on
	// the most common path — once we know our own bot user, which the
	// thread would otherwise tell us.
	var thread []bot.ThreadMessage
	if m.InThread() || m.BotUserID == "" {
		thread, err = w.deps.Slack.Replies(ctx, m.TeamID, m.ChannelID, m.ReplyThreadTS())
		if err != nil {
			if ctx.Err() != nil {
				return w.failed(parent, j, ctx.Err())
			}
			// An answer without context beats no answer.
			j.log.LogAttrs(ctx, slog.LevelWarn, "read thread history", slog.String("error", err.Error()))
		}
	}
	skip := map[string]bool{j.p.PlaceholderTS: true, j.p.StreamTS: true}
	for _, ts := range j.p.FollowUps {
		skip[ts] = true
	}
	msgs := w.buildMessages(ctx, agent, *m, thread, threadContext{teamID: m.TeamID, agentName: agent.Name, botUserID: m.BotUserID, skipTS: skip})

	if err := j.rec.set(ctx, "state", stateStreaming); err != nil {
		return w.failed(parent, j, err)
	}
	j.p.State = stateStreaming

	// A previous delivery may have left a native stream open: end it, and
	// stream into it by edits from now on.
	var st streamer
	var native *nativeStreamer
	switch {
	case j.p.StreamTS != "":
		w.stopStream(ctx, m.TeamID, m.ChannelID, j.p.StreamTS)
		st = w.newEditor(ctx, m.TeamID, m.ChannelID, j.p.StreamTS)
	case w.cfg.Streaming == StreamingNative:
		native = w.newNativeStreamer(ctx, j.rec, m.TeamID, m.ChannelID, m.ReplyThreadTS(), m.User, j.p.PlaceholderTS)
		st = native
	default:
		st = w.newEditor(ctx, m.TeamID, m.ChannelID, j.p.PlaceholderTS)
	}
	res, err := w.deps.LLM.Stream(ctx, llm.Request{Model: agent.Model, Messages: msgs, MaxTokens: w.cfg.MaxAnswerTokens},
		func(d string) error { st.add(d); return nil })
	st.close()
	if native != nil {
		if ts := native.streamTS(); ts != "" {
			j.p.StreamTS = ts
			w.stopStream(ctx, m.TeamID, m.ChannelID, ts)
		}
	}
	stats := replyStats{Model: res.Model, Provider: res.Provider, PromptTokens: res.PromptTokens,
		CompletionTokens: res.CompletionTokens, TimeToFirstToken: res.TimeToFirstToken, Latency: res.Latency}
	if stats.Model == "" {
		stats.Model = agent.Model
	}
	if ctx.Err() != nil {
		// Shut down, cancelled or the lock was lost: hand the task back; the
		// next delivery resumes in the same message.
		return w.failed(parent, j, context.Cause(ctx))
	}
	if err != nil {
		text := llmErrorText(err)
		var ie *llm.InterruptedError
		if errors.As(err, &ie) && strings.TrimSpace(ie.Partial.Text) != "" {
			text = strings.TrimSpace(ie.Partial.Text) + "\n\n" + textCutOffNote
		}
		j.log.LogAttrs(ctx, slog.LevelWarn, "llm failed", slog.String("error", err.Error()), slog.String("provider", res.Provider))
		return w.resolve(ctx, parent, j, text, konstruct.OutcomeError, err, stats, true)
	}

	text := strings.TrimSpace(res.Text)
	if err := j.rec.set(ctx, "state", stateGenerated, "text", text, "stats", mustJSON(stats)); err != nil {
		return w.failed(parent, j, err)
	}
	j.p.State, j.p.Text, j.p.Stats = stateGenerated, text, mustJSON(stats)
	return w.deliverGenerated(ctx, parent, j)
}

func (w *Server) stopStream(ctx context.Context, team, channel, ts string) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := w.deps.Slack.StopStream(cctx, team, channel, ts, ""); err != nil && bot.SlackErrorString(err) != "message_not_in_streaming_state" {
		w.log.LogAttrs(ctx, slog.LevelDebug, "stop stream", slog.String("error", err.Error()))
	}
}

// deliverGenerated shows the stored final text and closes the reply.
func (w *Server) deliverGenerated(ctx, parent context.Context, j *job) error {
	return w.resolve(ctx, parent, j, j.p.Text, konstruct.OutcomeAnswered, nil, j.p.stats(), false)
}

// resolve puts text in the reply's messages (the answer, or a human error),
// marks the reply done, records it and, for an answer, engages the thread.
// permanent says the cause cannot be fixed by retrying.
func (w *Server) resolve(ctx, parent context.Context, j *job, text, outcome string, cause error, stats replyStats, permanent bool) error {
	m := j.msg()
	fctx, cancel := context.WithTimeout(ctx, w.cfg.FinalizeTimeout)
	defer cancel()
	if err := w.deliver(fctx, j.rec, j.p, m.TeamID, m.ChannelID, m.ReplyThreadTS(), text); err != nil {
		if ctx.Err() == nil && !transient(err) {
			// Slack refuses the message for good (channel gone, token
			// revoked): nothing a retry or the janitor could do.
			j.log.LogAttrs(ctx, slog.LevelError, "reply undeliverable", slog.String("error", err.Error()))
			_ = j.rec.finish(context.WithoutCancel(ctx), konstruct.OutcomeError, konstruct.ErrorCode(err))
			w.record(ctx, j, konstruct.OutcomeError, err, stats)
			return permanentError(fmt.Errorf("deliver reply: %w", err))
		}
		return w.failed(parent, j, fmt.Errorf("deliver reply: %w", err))
	}
	code := konstruct.ErrorCode(cause)
	if err := j.rec.finish(context.WithoutCancel(ctx), outcome, code); err != nil {
		// The thread is right; a retry would only re-edit it the same way.
		j.log.LogAttrs(ctx, slog.LevelWarn, "finish reply progress", slog.String("error", err.Error()))
	}
	w.record(ctx, j, outcome, cause, stats)
	if outcome == konstruct.OutcomeAnswered && w.deps.Threads != nil {
		if err := w.deps.Threads.Engage(context.WithoutCancel(ctx), m.TenantID, m.ChannelID, m.ReplyThreadTS()); err != nil {
			j.log.LogAttrs(ctx, slog.LevelWarn, "engage thread", slog.String("error", err.Error()))
		}
	}
	if permanent && cause != nil {
		return permanentError(cause)
	}
	return nil
}

// record writes the replies row (a few tries: the answer is already in the
// thread, so a failure here is logged, never shown).
func (w *Server) record(ctx context.Context, j *job, outcome string, cause error, stats replyStats) {
	m := j.msg()
	r := konstruct.Reply{
		TenantID: m.TenantID, TeamID: m.TeamID, ChannelID: m.ChannelID, ThreadTS: m.ReplyThreadTS(),
		MessageTS: j.p.mainTS(), EventID: cmpOr(m.EventID, replyID(*m)),
		Model: stats.Model, Provider: stats.Provider, PromptTokens: stats.PromptTokens, CompletionTokens: stats.CompletionTokens,
		TimeToFirstToken: stats.TimeToFirstToken, Latency: stats.Latency, Outcome: outcome,
	}
	if cause != nil {
		r.Error = konstruct.ErrorCode(cause)
	}
	w.writeReply(ctx, r, j.log)
	since := time.Duration(0)
	switch {
	case !m.ReceivedAt.IsZero():
		since = time.Since(m.ReceivedAt)
	case !m.EventTime.IsZero():
		since = time.Since(m.EventTime)
	}
	w.cfg.Metrics.Reply(outcome, since)
	// One line per reply with its timings: what an operator greps for.
	level := slog.LevelInfo
	if outcome != konstruct.OutcomeAnswered {
		level = slog.LevelWarn
	}
	j.log.LogAttrs(ctx, level, "reply",
		slog.String("outcome", outcome),
		slog.String("error_code", r.Error),
		slog.String("provider", r.Provider),
		slog.String("model", r.Model),
		slog.Int("prompt_tokens", r.PromptTokens),
		slog.Int("completion_tokens", r.CompletionTokens),
		slog.Int64("ttft_ms", r.TimeToFirstToken.Milliseconds()),
		slog.Int64("llm_ms", r.Latency.Milliseconds()),
		slog.Int64("since_event_ms", since.Milliseconds()),
	)
}

func (w *Server) writeReply(ctx context.Context, r konstruct.Reply, log *slog.Logger) {
	ctx = context.WithoutCancel(ctx)
	var err error
	for try := 0; try < 3; try++ {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = w.deps.Replies.RecordReply(rctx, r)
		cancel()
		if err == nil {
			return
		}
		wait.Sleep(ctx, time.Duration(try+1)*200*time.Millisecond)
	}
	log.LogAttrs(ctx, slog.LevelError, "record reply", slog.String("error", err.Error()))
}

// deliver puts text into the reply's messages: the first part in the main
// message, the others in follow-ups, editing the follow-ups a previous
// delivery recorded and posting (then recording) only the missing ones.
func (w *Server) deliver(ctx context.Context, rec *record, p *progress, team, channel, thread, text string) error {
	parts := splitMarkdown(text, w.cfg.PartChars)
	if len(parts) == 0 {
		parts = []string{textInternal}
	}
	main := p.mainTS()
	if err := w.finalEdit(ctx, team, channel, main, parts[0]); err != nil {
		if bot.SlackErrorString(err) != "message_not_found" {
			return fmt.Errorf("edit answer: %w", err)
		}
		// Someone deleted the placeholder: answer in a new message.
		ts, perr := w.postOnce(ctx, team, channel, thread, bot.Msg{Text: plainText(parts[0]), Markdown: parts[0]}, main)
		if perr != nil {
			return fmt.Errorf("post answer: %w", perr)
		}
		field := "placeholder_ts"
		if p.StreamTS != "" {
			field = "stream_ts"
		}
		if err := rec.set(ctx, field, ts); err != nil {
			return err
		}
		if p.StreamTS != "" {
			p.StreamTS = ts
		} else {
			p.PlaceholderTS = ts
		}
	}
	after := p.mainTS()
	for i, part := range parts[1:] {
		if i < len(p.FollowUps) {
			if err := w.finalEdit(ctx, team, channel, p.FollowUps[i], part); err != nil {
				return fmt.Errorf("edit follow-up: %w", err)
			}
			after = p.FollowUps[i]
			continue
		}
		ts, err := w.postOnce(ctx, team, channel, thread, bot.Msg{Text: plainText(part), Markdown: part}, after)
		if err != nil {
			return fmt.Errorf("post follow-up: %w", err)
		}
		p.FollowUps = append(p.FollowUps, ts)
		if err := rec.setFollowUps(context.WithoutCancel(ctx), p.FollowUps); err != nil {
			return err
		}
		after = ts
	}
	// A longer earlier attempt left more follow-ups than this text needs.
	if extra := len(p.FollowUps) - (len(parts) - 1); extra > 0 {
		for _, ts := range p.FollowUps[len(parts)-1:] {
			if err := w.deps.Slack.Delete(ctx, team, channel, ts); err != nil && bot.SlackErrorString(err) != "message_not_found" {
				return fmt.Errorf("delete follow-up: %w", err)
			}
		}
		p.FollowUps = p.FollowUps[:len(parts)-1]
		if err := rec.setFollowUps(ctx, p.FollowUps); err != nil {
			return err
		}
	}
	return nil
}

// failed decides what a failure means for the task: a cancelled context
// hands it back; a transient error is retried, unless this was the last
// chance, when the placeholder is resolved with a human error.
func (w *Server) failed(ctx context.Context, j *job, err error) error {
	if ctx.Err() != nil || errors.Is(err, errLocked) {
		return err
	}
	if !w.lastChance(ctx, j) {
		return err
	}
	if j.p == nil {
		// Redis could not tell where the reply stands; the router's
		// placeholder is still worth resolving.
		j.p = &progress{PlaceholderTS: j.PlaceholderTS}
	}
	if j.p.mainTS() == "" {
		return err
	}
	text := textInternal
	if konstruct.ErrorCode(err) == konstruct.ENOTFOUND {
		text = textLostThread
	}
	m := j.msg()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.FinalizeTimeout)
	defer cancel()
	if derr := w.deliver(fctx, j.rec, j.p, m.TeamID, m.ChannelID, m.ReplyThreadTS(), text); derr != nil {
		j.log.LogAttrs(ctx, slog.LevelError, "resolve failed reply", slog.String("error", derr.Error()))
		return permanentError(err) // the janitor will try again
	}
	_ = j.rec.finish(fctx, konstruct.OutcomeError, konstruct.ErrorCode(err))
	w.record(ctx, j, konstruct.OutcomeError, err, j.p.stats())
	return permanentError(err)
}

// lastChance reports whether no retry will follow: asynq's last attempt, or
// a job older than MaxAge.
func (w *Server) lastChance(ctx context.Context, j *job) bool {
	if n, ok := asynq.GetRetryCount(ctx); ok {
		if mx, ok := asynq.GetMaxRetry(ctx); ok && n >= mx {
			return true
		}
	}
	return !j.EnqueuedAt.IsZero() && time.Since(j.EnqueuedAt) > w.cfg.MaxAge
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
