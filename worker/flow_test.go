package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/markdown"
	"github.com/konstruct/konstruct/llm"
	"github.com/konstruct/konstruct/llm/llmfake"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/slacksim"
)

func TestHistoryOrderNamesAndBudget(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		budget  int
		wantLen int // history messages between system and the question
	}{
		{"all fits", 6000, 4},
		{"newest kept", 40, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withConfig(func(c *Config) { c.HistoryTokens = tc.budget }))
			team, ch := e.ws.TeamID, e.channel()
			alice, bob := e.ws.UserIDs[0], e.ws.UserIDs[1]
			root, err := e.sim.Post(team, ch, alice, "Our anvil order #42 arrived dented.", "")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.sim.Post(team, ch, bob, "Same here with order #43.", root); err != nil {
				t.Fatal(err)
			}
			// An earlier exchange: a placeholder that became an answer, and
			// one that became an error (left out).
			if _, err := e.web.Post(ctxT(t), team, ch, root, konstruct.Content{Text: "Sorry to hear that! Send me photos of the dents."}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.web.Post(ctxT(t), team, ch, root, konstruct.Content{Text: textLLMDown}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.sim.Post(team, ch, alice, "Photos are attached above.", root); err != nil {
				t.Fatal(err)
			}
			job := e.mention("so, refund or replacement?", root)
			e.handle(job)

			msgs := e.fakes[0].Requests()[0].Messages
			hist := msgs[1 : len(msgs)-1]
			type turn struct{ role, content string }
			all := []turn{
				// People's turns carry their name in the text too: Ollama and
				// llama.cpp drop the `name` field.
				{"user", "[alice] Our anvil order #42 arrived dented."},
				{"user", "[bob] Same here with order #43."},
				{"assistant", "Sorry to hear that! Send me photos of the dents."},
				{"user", "[alice] Photos are attached above."},
			}
			want := all[len(all)-tc.wantLen:]
			if len(hist) != len(want) {
				t.Fatalf("history %+v, want %d messages", hist, len(want))
			}
			for i, w := range want {
				if hist[i].Role != w.role || hist[i].Content != w.content {
					t.Errorf("history[%d] = %s %q, want %s %q", i, hist[i].Role, hist[i].Content, w.role, w.content)
				}
				if hist[i].Name == "" {
					t.Errorf("history[%d] has no speaker name", i)
				}
			}
			if tc.wantLen == 4 && (hist[0].Name == hist[1].Name || hist[2].Name != "Mara") {
				t.Errorf("speaker names: %q %q %q", hist[0].Name, hist[1].Name, hist[2].Name)
			}
			if q := msgs[len(msgs)-1]; q.Content != "so, refund or replacement?" {
				t.Errorf("question %q", q.Content)
			}
		})
	}
}

func TestFallbackToSecondProvider(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		first llmfake.Reply
	}{
		{"500s", llmfake.Reply{Status: 500}},
		{"first token timeout", llmfake.Reply{Text: "too late", FirstTokenDelay: 5 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withProviders(2), withTimeouts(llm.Timeouts{FirstToken: 400 * time.Millisecond}))
			e.fakes[0].SetHandler(func(llmfake.ChatRequest) llmfake.Reply { return tc.first })
			e.fakes[1].SetHandler(func(llmfake.ChatRequest) llmfake.Reply { return llmfake.Reply{Text: "Answer from the backup."} })
			job := e.mention("hello?", "")
			e.handle(job)
			answers := e.answers(job)
			if len(answers) != 1 || markdownOf(t, answers[0]) != "Answer from the backup." {
				t.Fatalf("answers %+v", answers)
			}
			if n := len(e.fakes[0].Requests()); n == 0 {
				t.Error("the first provider was not tried")
			}
			rows := e.replies(e.tenant)
			if len(rows) != 1 || rows[0].Provider != "p2" || rows[0].Outcome != konstruct.OutcomeAnswered {
				t.Errorf("rows %+v", rows)
			}
		})
	}
}

// streamText is an answer that streams for about d.
func streamReply(words int, d time.Duration) llmfake.Reply {
	var b strings.Builder
	for i := range words {
		fmt.Fprintf(&b, "w%d ", i)
	}
	return llmfake.Reply{Text: strings.TrimSpace(b.String()), TokenDelay: d / time.Duration(words)}
}

func TestEditsCoalescedUnder429Storm(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reply := streamReply(60, 3*time.Second)
	e.fakes[0].SetHandler(func(llmfake.ChatRequest) llmfake.Reply { return reply })
	// Every chat.update answers 429 (Retry-After: 1 s) for the first 8 calls.
	e.sim.InjectFault("chat.update", slacksim.Fault{Status: 429, RetryAfter: 1, Count: 8})
	job := e.mention("talk to me", "")
	start := time.Now()
	e.handle(job)
	answers := e.answers(job)
	if len(answers) != 1 || markdownOf(t, answers[0]) != reply.Text {
		t.Fatalf("final text did not land: %+v", answers)
	}
	// 3 s of streaming at most one edit per second, each 429 blocking the
	// workspace for a second, then the final edit retried past the storm.
	calls := e.sim.Calls("chat.update")
	if calls > 14 {
		t.Errorf("%d chat.update calls in %v: not coalesced", calls, time.Since(start))
	}
	t.Logf("%d chat.update calls, %v", calls, time.Since(start))
}

func TestEditsShareTheWorkspaceBudget(t *testing.T) {
	t.Parallel()
	const burst = 10
	e := newEnv(t, withQueue(func(c *queue.Config) {
		c.SlackTiers = map[string]queue.SlackTier{"chat.update": {PerMinute: 60, Burst: burst}}
	}))
	reply := streamReply(40, 4*time.Second)
	e.fakes[0].SetHandler(func(llmfake.ChatRequest) llmfake.Reply { return reply })
	const n = 6
	jobs := make([]konstruct.ReplyJob, n)
	for i := range jobs {
		jobs[i] = e.mention(fmt.Sprintf("question %d", i), "")
	}
	base := e.sim.Calls("chat.update")
	start := time.Now()
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() { e.handle(j) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	calls := e.sim.Calls("chat.update") - base
	// Six replies streaming 4 s each alone would make ~24 intermediate edits;
	// sharing 60/min (a burst of 10, a third kept for finals) allows ~burst + 1/s.
	limit := burst + int(elapsed.Seconds()) + n + 1
	if calls > limit {
		t.Errorf("%d chat.update calls in %v, budget allows %d", calls, elapsed, limit)
	}
	for _, j := range jobs {
		if a := e.answers(j); len(a) != 1 || markdownOf(t, a[0]) != reply.Text {
			t.Errorf("reply %s: %+v", j.Message.TS, a)
		}
	}
	t.Logf("%d chat.update calls for %d replies in %v", calls, n, elapsed)
}

// longAnswer is about 30,000 characters of prose and code.
func longAnswer() string {
	var b strings.Builder
	for i := 0; b.Len() < 30000; i++ {
		fmt.Fprintf(&b, "## Section %d\n\nThis paragraph explains step %d in plain words, with **bold** and a [link](https://example.com/%d).\n\n", i, i, i)
		if i%3 == 0 {
			b.WriteString("```go\n")
			for l := range 60 {
				fmt.Fprintf(&b, "fmt.Println(\"section %d line %d\")\n", i, l)
			}
			b.WriteString("```\n\n")
		}
	}
	return strings.TrimSpace(b.String())
}

func TestLongAnswerSplitWithFencesIntact(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	text := longAnswer()
	e.fakes[0].SetHandler(func(llmfake.ChatRequest) llmfake.Reply {
		return llmfake.Reply{Chunks: chunk(text, 500)}
	})
	job := e.mention("write me a book", "")
	e.handle(job)
	answers := e.answers(job)
	if len(answers) < 3 || answers[0].TS != job.PlaceholderTS {
		t.Fatalf("%d answer messages, first %s (placeholder %s)", len(answers), answers[0].TS, job.PlaceholderTS)
	}
	var got []string
	for i, a := range answers {
		md := markdownOf(t, a)
		if n := utf8.RuneCountInString(md); n == 0 || n > 12000 {
			t.Errorf("message %d: %d characters of markdown", i, n)
		}
		if strings.Count(md, "```")%2 != 0 {
			t.Errorf("message %d leaves a code fence open", i)
		}
		if strings.Contains(md, "fmt.Println") && !strings.Contains(md, "```go") {
			t.Errorf("message %d has code without its ```go fence", i)
		}
		got = append(got, md)
	}
	// Nothing lost: every line of the answer is in order in the messages,
	// apart from the fences added at the seams.
	joined := strings.Join(got, "\n\n")
	if normalize(joined) != normalize(text) {
		t.Error("the messages do not add up to the answer")
	}
	noThinking(t, e.thread(job))

	// Delivering again (a retry after the answer was generated) edits the
	// same messages and posts nothing new.
	posts := e.sim.Calls("chat.postMessage")
	st, _, err := e.q.LoadReply(ctxT(t), job.Message.Post())
	if err != nil {
		t.Fatal(err)
	}
	st.Stage, st.Text = konstruct.StageFinal, text
	if err := e.q.SaveReply(ctxT(t), st); err != nil {
		t.Fatal(err)
	}
	e.handle(job)
	if n := len(e.answers(job)); n != len(answers) || e.sim.Calls("chat.postMessage") != posts {
		t.Errorf("redelivery: %d messages (was %d), %d new posts", n, len(answers), e.sim.Calls("chat.postMessage")-posts)
	}
}

// normalize drops seam fences and blank lines.
func normalize(s string) string {
	s = markdown.VisibleLinks(s) // the Slack edge shows link targets (bot/neutralize.go)
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "```") {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func chunk(s string, n int) []string {
	var out []string
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	return append(out, s)
}

func TestKilledMidStreamAnswersOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var mu sync.Mutex
	calls := 0
	e.fakes[0].SetHandler(func(llmfake.ChatRequest) llmfake.Reply {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			// The first worker dies while this stream hangs half-way.
			return llmfake.Reply{Text: "partial words that will never finish because the worker dies", TokenDelay: 20 * time.Millisecond, HangAfter: 5}
		}
		return llmfake.Reply{Text: "The complete answer."}
	})
	job := e.mention("long question", "")
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { done <- e.w.Handle(ctx, job, firstTry) }()
	// Wait until the partial answer shows in the placeholder, then kill.
	_, err := e.sim.WaitThread(deadline(t, 10*time.Second), job.Message.TeamID, job.Message.ChannelID, job.Message.TS, func(v slacksim.ThreadView) bool {
		for _, m := range v.Messages {
			if m.TS == job.PlaceholderTS && strings.Contains(m.Text, "partial") {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("killed Handle = %v, want context.Canceled (task handed back)", err)
	}
	// The task is delivered again (a new process: a new Server).
	w2 := e.newServer()
	if err := w2.Handle(deadline(t, 30*time.Second), job, firstTry); err != nil {
		t.Fatal(err)
	}
	answers := e.answers(job)
	if len(answers) != 1 || answers[0].TS != job.PlaceholderTS || markdownOf(t, answers[0]) != "The complete answer." {
		t.Fatalf("want exactly one answer in the placeholder, got %+v", answers)
	}
	// And once more: a no-op.
	if err := w2.Handle(deadline(t, 30*time.Second), job, firstTry); err != nil {
		t.Fatal(err)
	}
	if n := len(e.fakes[0].Requests()); n != 2 || len(e.answers(job)) != 1 {
		t.Errorf("%d LLM calls, %d answers", n, len(e.answers(job)))
	}
	if rows := e.replies(e.tenant); len(rows) != 1 || rows[0].Outcome != konstruct.OutcomeAnswered {
		t.Errorf("rows %+v", rows)
	}
}

func TestTwoTenantsNeverMixed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.fakes[0].SetHandler(func(r llmfake.ChatRequest) llmfake.Reply {
		sys := r.Messages[0].Content
		name := sys[strings.Index(sys, "Your name is ")+len("Your name is "):]
		name = name[:strings.Index(name, ".")]
		return llmfake.Reply{Text: "I am " + name + ", answering: " + r.LastUser(), TokenDelay: 10 * time.Millisecond}
	})
	otto := e.addTenant(konstruct.Agent{Name: "Otto", Role: "IT Helpdesk", Persona: "Terse."})
	ws2 := e.sim.AddWorkspace(slacksim.WorkspaceSpec{})
	e.web.Set([]konstruct.Workspace{
		{TeamID: e.ws.TeamID, BotUserID: e.ws.BotUserID, BotToken: e.ws.BotToken, Status: konstruct.WorkspaceActive},
		{TeamID: ws2.TeamID, BotUserID: ws2.BotUserID, BotToken: ws2.BotToken, Status: konstruct.WorkspaceActive},
	})
	var jobs []konstruct.ReplyJob
	for i := range 4 {
		jobs = append(jobs, e.mentionIn(e.tenant, e.ws, fmt.Sprintf("mara q%d", i), "", true))
		jobs = append(jobs, e.mentionIn(otto, ws2, fmt.Sprintf("otto q%d", i), "", true))
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() { e.handle(j) })
	}
	wg.Wait()
	for _, j := range jobs {
		a := e.answers(j)
		want := "I am Mara"
		if j.Message.TenantID == otto {
			want = "I am Otto"
		}
		if len(a) != 1 || !strings.HasPrefix(markdownOf(t, a[0]), want) {
			t.Errorf("%s: %+v, want %q", j.Message.Text, a, want)
		}
	}
	for _, r := range e.fakes[0].Requests() {
		sys, q := r.Messages[0].Content, r.LastUser()
		if strings.HasPrefix(q, "otto") != strings.Contains(sys, "Your name is Otto") || strings.Contains(sys, "Mara") && strings.Contains(sys, "Otto") {
			t.Errorf("question %q got system prompt %q", q, sys)
		}
	}
	if a, b := len(e.replies(e.tenant)), len(e.replies(otto)); a != 4 || b != 4 {
		t.Errorf("rows: %d for Mara's tenant, %d for Otto's", a, b)
	}
}

func TestNoPlaceholderPostsOne(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	job := e.mentionIn(e.tenant, e.ws, "no placeholder here", "", false)
	e.handle(job)
	e.handle(job)
	answers := e.answers(job)
	if len(answers) != 1 || markdownOf(t, answers[0]) != "Echo: no placeholder here" {
		t.Fatalf("answers %+v", answers)
	}
}

func TestNativeStreaming(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Streaming = StreamingNative }))
	reply := streamReply(30, 1500*time.Millisecond)
	e.fakes[0].SetHandler(func(llmfake.ChatRequest) llmfake.Reply { return reply })
	job := e.mention("stream it", "")
	e.handle(job)
	answers := e.answers(job)
	if len(answers) != 1 || answers[0].TS == job.PlaceholderTS || answers[0].Streaming || answers[0].Text != reply.Text {
		t.Fatalf("want one finished streamed message replacing the placeholder, got %+v", answers)
	}
	if e.sim.Calls("chat.startStream") != 1 || e.sim.Calls("chat.stopStream") != 1 {
		t.Errorf("startStream %d, stopStream %d", e.sim.Calls("chat.startStream"), e.sim.Calls("chat.stopStream"))
	}
	if rows := e.replies(e.tenant); len(rows) != 1 || rows[0].MessageTS != answers[0].TS {
		t.Errorf("rows %+v", rows)
	}
}

// A reply whose process died mid-stream, and that no task will retry, is
// taken over by the janitor once its heartbeat is overdue: answered from its
// recorded job in the same placeholder.
func TestJanitorTakesOverOrphans(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withQueue(func(c *queue.Config) { c.OrphanAfter = time.Minute }),
		withConfig(func(c *Config) { c.OrphanGrace = time.Minute }))
	var calls atomic.Int32
	e.fakes[0].SetHandler(func(llmfake.ChatRequest) llmfake.Reply {
		if calls.Add(1) == 1 {
			return llmfake.Reply{Text: "never finishes", HangAfter: 1}
		}
		return llmfake.Reply{Text: "Answered after all."}
	})
	job := e.mention("will crash", "")
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { done <- e.w.Handle(ctx, job, firstTry) }()
	if _, err := e.sim.WaitThread(deadline(t, 10*time.Second), job.Message.TeamID, job.Message.ChannelID, job.Message.TS, func(v slacksim.ThreadView) bool {
		for _, m := range v.Messages {
			if m.TS == job.PlaceholderTS && m.Updates > 0 {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	cancel() // the process "crashes": no task retries it
	<-done
	// Not due yet right away…
	if n, err := e.w.Sweep(ctxT(t)); err != nil || n != 0 {
		t.Fatalf("early sweep: %d, %v", n, err)
	}
	e.clock.advance(2 * time.Minute) // past the heartbeat and the grace
	n, err := e.w.Sweep(ctxT(t))
	if err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	answers := e.answers(job)
	if len(answers) != 1 || answers[0].TS != job.PlaceholderTS || markdownOf(t, answers[0]) != "Answered after all." {
		t.Fatalf("answers %+v", answers)
	}
	if rows := e.replies(e.tenant); len(rows) != 1 || rows[0].Outcome != konstruct.OutcomeAnswered {
		t.Errorf("rows %+v", rows)
	}
	// A late retry of the task is now a no-op.
	e.handle(job)
	if n := calls.Load(); n != 2 {
		t.Errorf("%d LLM calls, want 2", n)
	}
}

// A reply that can only be finished, not answered (its job was not
// recorded), gets a short error in place of its placeholder.
func TestJanitorFinishesWhatItCannotAnswer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withQueue(func(c *queue.Config) { c.OrphanAfter = time.Minute }))
	job := e.mention("lost", "")
	post := job.Message.Post()
	st, err := e.q.BeginReply(ctxT(t), konstruct.ReplyState{Post: post, ThreadTS: job.Message.ReplyThreadTS(), Stage: konstruct.StageQueued})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.ClaimPlaceholder(ctxT(t), post, job.PlaceholderTS); err != nil || st.Job != nil {
		t.Fatal(err, st.Job)
	}
	e.clock.advance(time.Hour)
	if n, err := e.w.Sweep(ctxT(t)); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	if a := e.answers(job); len(a) != 1 || a[0].Text != textOrphaned {
		t.Fatalf("answers %+v", a)
	}
	if rows := e.replies(e.tenant); len(rows) != 1 || rows[0].Outcome != konstruct.OutcomeOrphaned {
		t.Errorf("rows %+v", rows)
	}
}

// A reply whose task waits in the queue is left to the worker that will
// take it, however long the wait.
func TestJanitorLeavesQueuedReplies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	job := e.mention("waiting in line", "")
	if _, err := e.q.BeginReply(ctxT(t), konstruct.ReplyState{Post: job.Message.Post(), ThreadTS: job.Message.ReplyThreadTS(), Stage: konstruct.StageQueued, Job: &job}); err != nil {
		t.Fatal(err)
	}
	e.enqueue(job)
	e.clock.advance(time.Hour)
	if n, err := e.w.Sweep(ctxT(t)); err != nil || n != 0 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	if a := e.answers(job); len(a) != 1 || a[0].Text != konstruct.TextThinking {
		t.Errorf("the queued reply was touched: %+v", a)
	}
}

func TestConcurrentDeliveryIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	release := make(chan struct{})
	e.fakes[0].SetHandler(func(r llmfake.ChatRequest) llmfake.Reply {
		<-release
		return llmfake.Reply{Text: "only once"}
	})
	job := e.mention("twice at once", "")
	done := make(chan error, 1)
	go func() { done <- e.w.Handle(deadline(t, 30*time.Second), job, firstTry) }()
	// Wait for the first delivery to reach the LLM.
	for len(e.fakes[0].Requests()) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	err := e.newServer().Handle(deadline(t, 30*time.Second), job, firstTry)
	if d, ok := konstruct.Deferred(err); !ok || d < 5*time.Second {
		t.Errorf("second delivery = %v (deferred %v), want deferred by ≥ 5 s", err, d)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if a := e.answers(job); len(a) != 1 || markdownOf(t, a[0]) != "only once" {
		t.Errorf("answers %+v", a)
	}
}

// A top-level post has no history: with the bot user known from the
// message (the router sets it), the worker answers without reading the
// thread, and still strips its own mention from the question.
func TestTopLevelSkipsHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	job := e.mention("what's new?", "")
	job.Message.BotUserID = e.ws.BotUserID
	before := e.sim.Calls("conversations.replies")
	e.handle(job)
	if n := e.sim.Calls("conversations.replies") - before; n != 0 {
		t.Errorf("conversations.replies called %d times for a top-level post", n)
	}
	if a := e.answers(job); len(a) != 1 || markdownOf(t, a[0]) != "Echo: what's new?" {
		t.Errorf("answers = %+v", a)
	}
	// In a thread, the history is read.
	reply := e.mention("and then?", job.Message.TS)
	reply.Message.BotUserID = e.ws.BotUserID
	e.handle(reply)
	if n := e.sim.Calls("conversations.replies") - before; n == 0 {
		t.Error("history not read for a message in a thread")
	}
}

// A model that will not stop floods nobody: the answer is capped at
// MaxAnswerMessages messages, the last one says it was cut, and the token
// cap goes to the server.
func TestLoopingModelIsCut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.PartChars = 1000 }))
	loop := strings.Repeat("All work and no play makes Jack a dull boy. ", 25) + "\n\n"
	chunks := make([]string, 2000) // ~2.2 MB, far past 5 × 1000 characters
	for i := range chunks {
		chunks[i] = loop
	}
	e.fakes[0].SetHandler(func(llmfake.ChatRequest) llmfake.Reply { return llmfake.Reply{Chunks: chunks} })
	job := e.mention("tell me everything", "")
	e.handle(job)
	answers := e.answers(job)
	if len(answers) != DefaultMaxAnswerMessages {
		t.Fatalf("%d messages, want %d", len(answers), DefaultMaxAnswerMessages)
	}
	for i, a := range answers {
		if n := utf8.RuneCountInString(markdownOf(t, a)); n > 1000 {
			t.Errorf("message %d: %d characters", i, n)
		}
	}
	if last := markdownOf(t, answers[len(answers)-1]); !strings.HasSuffix(last, textTooLong) {
		t.Errorf("the last message does not say the answer was cut: …%q", last[max(0, len(last)-120):])
	}
	reqs := e.fakes[0].Requests()
	if len(reqs) != 1 || reqs[0].MaxTokens != DefaultMaxAnswerTokens {
		t.Errorf("requests %d, max_tokens %d; want 1, %d", len(reqs), reqs[0].MaxTokens, DefaultMaxAnswerTokens)
	}
	if rows := e.replies(e.tenant); len(rows) != 1 || rows[0].Outcome != konstruct.OutcomeAnswered {
		t.Errorf("rows %+v", rows)
	}
}

// Past chat.update's budget a final answer does not wait a minute: it is
// posted as a new message (chat.postMessage, budgeted per channel) and the
// placeholder it replaces is deleted under chat.delete's own budget. One
// answer per question, no placeholder left behind.
func TestFinalPastUpdateBudgetPostsAnew(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withQueue(func(c *queue.Config) {
		c.SlackTiers = map[string]queue.SlackTier{"chat.update": {PerMinute: 1, Burst: 1}}
	}))
	const n = 3
	jobs := make([]konstruct.ReplyJob, n)
	for i := range jobs {
		jobs[i] = e.mention(fmt.Sprintf("question %d", i), "")
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() { e.handle(j) })
	}
	wg.Wait()
	anew := 0
	for i, j := range jobs {
		a := e.answers(j)
		if len(a) != 1 || markdownOf(t, a[0]) != fmt.Sprintf("Echo: question %d", i) {
			t.Errorf("question %d: %+v", i, a)
			continue
		}
		if a[0].TS != j.PlaceholderTS {
			anew++
		}
		noThinking(t, e.thread(j))
	}
	if anew != n-1 || e.sim.Calls("chat.update") != 1 {
		t.Errorf("%d answers posted anew, %d chat.update calls; want %d and 1", anew, e.sim.Calls("chat.update"), n-1)
	}
}
