package worker

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/llm/llmfake"
	"github.com/konstruct/konstruct/metrics"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/slacksim"
)

// parseButtons are the buttons of a message's blocks: action id → value.
func parseButtons(t *testing.T, raw json.RawMessage) map[string]string {
	t.Helper()
	out := map[string]string{}
	if len(raw) == 0 {
		return out
	}
	var blocks []struct {
		Type     string `json:"type"`
		Elements []struct {
			Type     string `json:"type"`
			ActionID string `json:"action_id"`
			Value    string `json:"value"`
		} `json:"elements"`
	}
	if err := json.Unmarshal(raw, &blocks); err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		if b.Type != "actions" {
			continue
		}
		for _, e := range b.Elements {
			out[e.ActionID] = e.Value
		}
	}
	return out
}

// setPolicy changes the env's tenant's policy in the store.
func (e *env) setPolicy(p konstruct.PolicyPatch) {
	e.t.Helper()
	if _, err := e.st.SetPolicy(ctxT(e.t), e.tenant, p); err != nil {
		e.t.Fatal(err)
	}
	e.pols.Invalidate(e.tenant)
}

// handleAsync runs Handle in the background; the returned channel gets
// its error.
func (e *env) handleAsync(job konstruct.ReplyJob) <-chan error {
	done := make(chan error, 1)
	go func() { done <- e.w.Handle(deadline(e.t, 60*time.Second), job, firstTry) }()
	return done
}

// TestAnswerButtons: while the answer streams (chat.update), its message
// carries Stop; the final answer carries 👍 and 👎 — on its last message
// when it takes several — and no Stop; each button's value names the
// question and its asker.
func TestAnswerButtons(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.EditInterval, c.PartChars = 50*time.Millisecond, 1000 }))
	long := strings.Repeat("A sentence of the answer. ", 60) // two messages of 1,000 characters
	e.fakes[0].SetHandler(func(llmfake.ChatRequest) llmfake.Reply {
		return llmfake.Reply{Text: long, TokenDelay: 5 * time.Millisecond}
	})
	job := e.mention("buttons?", "")
	ref := konstruct.AnswerRef{TeamID: e.ws.TeamID, ChannelID: e.channel(), TS: job.Message.TS, Asker: job.Message.User}.String()

	var wg sync.WaitGroup
	stopSeen := false
	watch, stopWatch := context.WithCancel(ctxT(t))
	wg.Go(func() {
		_, err := e.sim.WaitThread(watch, e.ws.TeamID, e.channel(), job.Message.TS, func(v slacksim.ThreadView) bool {
			for _, m := range v.Messages {
				if b := parseButtons(t, m.Blocks); m.TS == job.PlaceholderTS && b[konstruct.ActionStop] == ref {
					return true
				}
			}
			return false
		})
		stopSeen = err == nil
	})
	e.handle(job)
	stopWatch()
	wg.Wait()
	if !stopSeen {
		t.Error("no Stop button while the answer streamed")
	}
	answers := e.answers(job)
	if len(answers) != 2 {
		t.Fatalf("%d messages, want 2", len(answers))
	}
	if b := parseButtons(t, answers[0].Blocks); len(b) != 0 {
		t.Errorf("the first message keeps buttons %v", b)
	}
	b := parseButtons(t, answers[1].Blocks)
	if len(b) != 2 || b[konstruct.ActionVoteUp] != ref || b[konstruct.ActionVoteDown] != ref {
		t.Errorf("last message's buttons %v, want 👍/👎 with %q", b, ref)
	}
	// An error text carries none.
	e.fakes[0].SetHandler(func(llmfake.ChatRequest) llmfake.Reply { return llmfake.Reply{Status: 401} })
	bad := e.mention("fail", "")
	_ = e.w.Handle(deadline(t, 30*time.Second), bad, firstTry)
	for _, m := range e.answers(bad) {
		if b := parseButtons(t, m.Blocks); len(b) != 0 {
			t.Errorf("error text with buttons %v", b)
		}
	}
}

// TestStopCancelsTheLLMRequest: Stop, written by another process (another
// Queue on the same Redis), cancels the LLM request within 5 s; the
// partial answer stays, marked as stopped, with 👍/👎 and no Stop; then it
// stops changing; the reply is recorded as stopped, its tokens counted.
func TestStopCancelsTheLLMRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.EditInterval, c.StopPoll = 50*time.Millisecond, 100*time.Millisecond }))
	// Some text, then the model hangs: only a cancelled request ends it.
	e.fakes[0].SetHandler(func(llmfake.ChatRequest) llmfake.Reply {
		return llmfake.Reply{Text: "The first words of a long answer that never ends", HangAfter: 6}
	})
	job := e.mention("go on forever", "")
	done := e.handleAsync(job)
	ref := konstruct.AnswerRef{TeamID: e.ws.TeamID, ChannelID: e.channel(), TS: job.Message.TS, Asker: job.Message.User}
	_, err := e.sim.WaitThread(deadline(t, 10*time.Second), e.ws.TeamID, e.channel(), job.Message.TS, func(v slacksim.ThreadView) bool {
		for _, m := range v.Messages {
			if m.TS == job.PlaceholderTS && parseButtons(t, m.Blocks)[konstruct.ActionStop] == ref.String() {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal("no Stop button while streaming: ", err)
	}
	other := e.rdb.NewQueue(t, queue.Config{}) // the gateway's process
	post := job.Message.Post()
	if err := other.StopReply(ctxT(t), post); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Handle: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the LLM request still runs 5 s after Stop")
	}
	t.Logf("stopped %v after the key was written", time.Since(stopped).Round(time.Millisecond))
	answers := e.answers(job)
	if len(answers) != 1 {
		t.Fatalf("%d messages", len(answers))
	}
	md := markdownOf(t, answers[0])
	if !strings.HasPrefix(md, "The first words") || !strings.HasSuffix(md, textStopped) {
		t.Errorf("stopped answer %q: want the partial text, marked as stopped", md)
	}
	b := parseButtons(t, answers[0].Blocks)
	if len(b) != 2 || b[konstruct.ActionStop] != "" || b[konstruct.ActionVoteUp] == "" {
		t.Errorf("buttons of the stopped answer %v", b)
	}
	updates := answers[0].Updates
	time.Sleep(300 * time.Millisecond) // longer than EditInterval and StopPoll: nothing more is written
	if again := e.answers(job); again[0].Updates != updates || markdownOf(t, again[0]) != md {
		t.Errorf("the answer changed after Stop: %d → %d updates", updates, again[0].Updates)
	}
	rows := e.replies(e.tenant)
	if len(rows) != 1 || rows[0].Outcome != konstruct.OutcomeStopped || rows[0].UserID != job.Message.User || rows[0].PostTS != job.Message.TS {
		t.Fatalf("rows %+v", rows)
	}
	if day, _, _ := e.q.TokensUsed(ctxT(t), e.tenant, time.Now()); day == 0 || int(day) != rows[0].PromptTokens+rows[0].CompletionTokens {
		t.Errorf("tokens counted %d, the row says %d + %d", day, rows[0].PromptTokens, rows[0].CompletionTokens)
	}
	// Stop pressed before a delivery starts: the model is not asked.
	calls := len(e.fakes[0].Requests())
	early := e.mention("never mind", "")
	if err := other.StopReply(ctxT(t), early.Message.Post()); err != nil {
		t.Fatal(err)
	}
	e.handle(early)
	if a := e.answers(early); len(a) != 1 || markdownOf(t, a[0]) != textStopped || len(e.fakes[0].Requests()) != calls {
		t.Errorf("stopped before streaming: %+v, %d requests (was %d)", a, len(e.fakes[0].Requests()), calls)
	}
}

// TestFollowPolicy: after an answer the thread is followed for the
// tenant's TTL (auto), not at all with mention or off; off answers the
// mention alone, without reading the thread.
func TestFollowPolicy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ttl := 2 * time.Hour
	e.setPolicy(konstruct.PolicyPatch{FollowTTL: &ttl})
	job := e.mention("first", "")
	e.handle(job)
	thread := job.Message.ReplyThreadTS()
	if n, got := e.states.count(e.tenant, e.channel(), thread), e.states.ttl(e.tenant, e.channel(), thread); n != 1 || got != ttl {
		t.Fatalf("engaged %d times for %v, want once for %v", n, got, ttl)
	}

	off := konstruct.FollowOff
	e.setPolicy(konstruct.PolicyPatch{Follow: &off})
	reads := e.sim.Calls("conversations.replies")
	inThread := e.mention("second, in the thread", thread)
	inThread.Alone = true // as the router queues it under off
	e.handle(inThread)
	if e.sim.Calls("conversations.replies") != reads {
		t.Error("the thread was read for a message answered alone")
	}
	reqs := e.fakes[0].Requests()
	last := reqs[len(reqs)-1]
	if len(last.Messages) != 2 || last.Messages[0].Role != "system" || !strings.Contains(last.Messages[1].Content, "second, in the thread") {
		t.Errorf("the model got %d messages; want the system prompt and the question alone: %+v", len(last.Messages), last.Messages)
	}
	if n := e.states.count(e.tenant, e.channel(), thread); n != 1 {
		t.Errorf("engaged again under off (%d)", n)
	}
}

// TestBudgetCrossingMidStream: a tenant's tokens are counted while an
// answer streams, so its budget runs out in the middle of a long answer
// (and the router's next question gets the budget line); the answer in
// progress still finishes in full. At the end the count is the provider's
// own; 80 % and 100 % are each logged and counted once.
func TestBudgetCrossingMidStream(t *testing.T) {
	t.Parallel()
	mx := metrics.New()
	e := newEnv(t, withConfig(func(c *Config) { c.StopPoll, c.Metrics = 50*time.Millisecond, mx }))
	text := strings.Repeat("budget ", 2000) + "THE END"
	e.fakes[0].SetHandler(func(llmfake.ChatRequest) llmfake.Reply {
		return llmfake.Reply{Text: text, TokenDelay: time.Millisecond}
	})
	day := int64(1500) // the answer alone is ~3,500 tokens by estimate, 2,002 by the provider
	e.setPolicy(konstruct.PolicyPatch{TokensPerDay: &day})
	job := e.mention("a long one please", "")
	done := e.handleAsync(job)

	crossedMidStream := false
	for !crossedMidStream {
		select {
		case err := <-done:
			t.Fatalf("the answer ended (%v) before its tokens crossed the budget", err)
		case <-time.After(20 * time.Millisecond):
		}
		used, _, err := e.q.TokensUsed(ctxT(t), e.tenant, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		crossedMidStream = used >= day
	}
	if err := <-done; err != nil {
		t.Fatalf("Handle: %v", err)
	}
	var all strings.Builder
	for _, a := range e.answers(job) {
		all.WriteString(markdownOf(t, a))
	}
	if !strings.HasSuffix(all.String(), "THE END") {
		t.Errorf("the answer in progress was cut: …%q", all.String()[max(0, all.Len()-80):])
	}
	rows := e.replies(e.tenant)
	used, month, _ := e.q.TokensUsed(ctxT(t), e.tenant, time.Now())
	if len(rows) != 1 || used != int64(rows[0].PromptTokens+rows[0].CompletionTokens) || month != used || rows[0].CompletionTokens < 2000 {
		t.Fatalf("counted %d (month %d); the provider said %+v", used, month, rows)
	}
	for _, th := range []string{"80", "100"} {
		if n := counterValue(t, mx, "konstruct_budget_crossings_total", map[string]string{"period": "day", "threshold": th}); n != 1 {
			t.Errorf("day crossings of %s%%: %v, want 1", th, n)
		}
	}
	if n := counterValue(t, mx, "konstruct_budget_crossings_total", map[string]string{"period": "month", "threshold": "80"}); n != 0 {
		t.Errorf("month crossings without a month budget: %v", n)
	}
}

func counterValue(t *testing.T, mx *metrics.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := mx.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
