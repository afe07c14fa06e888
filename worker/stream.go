package worker

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/markdown"
)

// streamer shows a growing answer in Slack while the model writes it: the
// model's deltas accumulate (linear time), and one loop (run) puts the
// answer so far on an output at most once per EditInterval, and only when
// the workspace's write budget allows; skipped writes fold into the next
// one. The final text is delivered afterwards by the reply, so under a 429
// storm nothing but the final edit is owed.
//
// Every StopPoll the loop also counts the answer's tokens so far against
// the tenant's budgets (meter) and looks whether the asker pressed Stop
// (a key any process may have set): then it calls stop, which cancels the
// LLM request, and shows nothing more — the reply delivers the partial
// answer, marked as stopped.
type streamer struct {
	w     *Server
	r     *reply
	out   output
	used  []output // every output the loop used, ended by close
	meter *meter
	stop  func() // cancels the LLM request; called once at most

	mu    sync.Mutex
	buf   strings.Builder
	runes int

	closing, done chan struct{}
}

// output is where a streaming answer shows: chat.update edits of one
// message, or a native chat.startStream stream.
type output interface {
	// method is the Slack method whose budget the intermediate writes spend.
	method() string
	// show puts the answer so far (all of it, not a delta) in Slack.
	show(ctx context.Context, text string) error
	// end is called once the model is done and the loop has stopped.
	end(ctx context.Context)
}

const tick = 200 * time.Millisecond

// newStreamer starts streaming into the reply's message: edits of the
// placeholder, or a native stream when so configured and no earlier
// delivery left one (which is then ended and edited instead).
func (w *Server) newStreamer(ctx context.Context, r *reply, m *meter, stop func()) *streamer {
	s := &streamer{w: w, r: r, meter: m, stop: stop, closing: make(chan struct{}), done: make(chan struct{})}
	switch {
	case r.st.StreamTS != "":
		w.stopStream(ctx, r.st.Post, r.st.StreamTS)
		s.out = &editOutput{w: w, post: r.st.Post, ts: r.st.StreamTS, buttons: r.stopButtons()}
	case w.cfg.Streaming == StreamingNative:
		s.out = &nativeOutput{w: w, r: r}
	default:
		s.out = &editOutput{w: w, post: r.st.Post, ts: r.st.PlaceholderTS, buttons: r.stopButtons()}
	}
	s.used = append(s.used, s.out)
	go s.run(ctx)
	return s
}

// add appends a delta and returns the answer's length so far, in
// characters.
func (s *streamer) add(delta string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.WriteString(delta)
	s.runes += utf8.RuneCountInString(delta)
	return s.runes
}

// text is the answer so far. A Builder's String shares its bytes, which
// later writes append to but never change.
func (s *streamer) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// close stops the loop, waits for it and lets the outputs end.
func (s *streamer) close(ctx context.Context) {
	close(s.closing)
	<-s.done
	for _, o := range s.used {
		o.end(ctx)
	}
}

func (s *streamer) run(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(tick)
	defer t.Stop()
	shown := 0
	var last, polled time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		case <-t.C:
		}
		text := s.text()
		if time.Since(polled) >= s.w.cfg.StopPoll {
			polled = time.Now()
			s.meter.streamed(ctx, text)
			if s.w.stopped(ctx, s.r.st.Post) {
				s.r.log.LogAttrs(ctx, slog.LevelInfo, "the asker stopped the answer")
				s.stop()
				return // the answer stops changing here
			}
		}
		if len(text) == shown || strings.TrimSpace(text) == "" || time.Since(last) < s.w.cfg.EditInterval {
			continue
		}
		// An interim edit never waits: when the budget is short (the
		// answers and placeholders of others come first) it is skipped and
		// folded into the next one.
		if s.w.take(ctx, s.r.st.Post, s.out.method(), konstruct.PriorityInterim) > 0 {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.out.show(cctx, text)
		cancel()
		last = time.Now()
		switch {
		case err == nil:
			shown = len(text)
		case ctx.Err() != nil:
		default:
			if d, ok := konstruct.RetryAfter(err); ok {
				s.w.pause(ctx, s.r.st.Post.TeamID, s.out.method(), d)
				continue
			}
			if fb, ok := s.out.(interface{ fallback() output }); ok {
				s.r.log.LogAttrs(ctx, slog.LevelWarn, "native stream failed; streaming by edits", slog.String("error", err.Error()))
				if s.out = fb.fallback(); s.out == nil {
					return // nothing more to show until the final delivery
				}
				s.used = append(s.used, s.out)
				continue
			}
			s.r.log.LogAttrs(ctx, slog.LevelDebug, "intermediate edit failed", slog.String("error", err.Error()))
		}
	}
}

// streamView is what a message shows while its answer streams: the first
// part, with any code block left open closed so the rest renders.
func (w *Server) streamView(text string) string {
	if utf8.RuneCountInString(text) <= w.cfg.PartChars {
		return markdown.CloseOpenFence(strings.TrimSpace(text))
	}
	// Only the start matters; don't re-split a long answer on every tick.
	head := text[:markdown.RuneOffset(text, w.cfg.PartChars+1)]
	return markdown.Split(head, w.cfg.PartChars)[0]
}

// editOutput streams by chat.update edits of one message, with a Stop
// button under it.
type editOutput struct {
	w       *Server
	post    konstruct.Post
	ts      string
	buttons []konstruct.Button
}

func (e *editOutput) method() string { return methodUpdate }

func (e *editOutput) show(ctx context.Context, text string) error {
	return e.w.deps.Slack.Update(ctx, e.post.TeamID, e.post.ChannelID, e.ts, konstruct.Content{Markdown: e.w.streamView(text), Buttons: e.buttons})
}

func (e *editOutput) end(context.Context) {}

// nativeOutput streams with chat.startStream/appendStream. The stream
// starts at the first text and its ts is recorded before anything else
// (a retry must edit this message, never start a second one); the
// placeholder is then deleted. The streamed message carries one part at
// most; the rest of a long answer comes with the final delivery, which
// also stops the stream.
type nativeOutput struct {
	w    *Server
	r    *reply
	ts   string // the streamed message, once started
	sent int    // bytes of the answer in the stream
}

func (n *nativeOutput) method() string { return methodAppend }

func (n *nativeOutput) show(ctx context.Context, text string) error {
	post := n.r.st.Post
	// The stream holds one part at most.
	limit := markdown.RuneOffset(text, n.w.cfg.PartChars)
	if n.sent >= limit {
		return nil
	}
	chunk := text[n.sent:limit]
	if n.ts != "" {
		if err := n.w.deps.Slack.AppendStream(ctx, post.TeamID, post.ChannelID, n.ts, chunk); err != nil {
			return err
		}
		n.sent = limit
		return nil
	}
	ts, err := n.w.deps.Slack.StartStream(ctx, post.TeamID, post.ChannelID, n.r.st.ThreadTS, n.r.job.Message.User, chunk)
	if err != nil {
		return err
	}
	n.ts, n.sent = ts, limit
	// Recorded from a copy: the reply's own state is the reply's
	// goroutine's until the stream ends.
	st := n.r.st
	st.StreamTS = ts
	sctx, cancel := detached(ctx, 5*time.Second)
	defer cancel()
	if err := n.w.deps.States.SaveReply(sctx, st); err != nil {
		n.r.log.LogAttrs(ctx, slog.LevelWarn, "record stream ts", slog.String("error", err.Error()))
	}
	// The streamed message replaces the placeholder.
	n.w.deleteQuietly(ctx, post, n.r.st.PlaceholderTS)
	return nil
}

// fallback is what streams once the native stream failed: edits of the
// placeholder when the stream never started; nothing (nil) when it did:
// a message in streaming state is not edited, and the final delivery stops
// the stream and puts the whole answer in it.
func (n *nativeOutput) fallback() output {
	if n.ts != "" {
		return nil
	}
	return &editOutput{w: n.w, post: n.r.st.Post, ts: n.r.st.PlaceholderTS, buttons: n.r.stopButtons()}
}

func (n *nativeOutput) end(ctx context.Context) {
	if n.ts != "" {
		n.r.st.StreamTS = n.ts
	}
}
