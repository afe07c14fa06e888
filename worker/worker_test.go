package worker

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/llm/llmfake"
)

func TestAnswerWithPersonaRecordedAndEngaged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.fakes[0].SetHandler(func(r llmfake.ChatRequest) llmfake.Reply {
		return llmfake.Reply{Text: "Hi! I'm **Mara**. Refunds take *5 business days*:\n\n1. Open the order\n2. Click refund", TokenDelay: 5 * time.Millisecond}
	})
	job := e.mention("how do refunds work?", "")
	e.handle(job)

	reqs := e.fakes[0].Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d LLM requests", len(reqs))
	}
	sys := reqs[0].Messages[0]
	if sys.Role != "system" {
		t.Fatalf("first message is %q", sys.Role)
	}
	for _, want := range []string{
		"Acme sells anvils. Refunds take 5 business days.",
		"Your name is Mara. Your role is Customer Support.",
		"Warm, precise and brief. Loves checklists.",
		"Never claim or imply that you are human",
		"say plainly that you are an AI assistant",
		"Slack",
	} {
		if !strings.Contains(sys.Content, want) {
			t.Errorf("system prompt lacks %q:\n%s", want, sys.Content)
		}
	}
	if strings.Index(sys.Content, "Acme sells") > strings.Index(sys.Content, "Your name is") {
		t.Error("instructions should come before the identity")
	}
	last := reqs[0].Messages[len(reqs[0].Messages)-1]
	if last.Role != "user" || last.Content != "how do refunds work?" {
		t.Errorf("last message %+v: the bot mention should be stripped", last)
	}

	answers := e.answers(job)
	if len(answers) != 1 || answers[0].TS != job.PlaceholderTS {
		t.Fatalf("want the placeholder edited into one answer, got %+v", answers)
	}
	md := markdownOf(t, answers[0])
	if !strings.Contains(md, "**Mara**") || !strings.Contains(md, "1. Open the order") {
		t.Errorf("markdown block: %q", md)
	}
	if strings.Contains(answers[0].Text, "**") {
		t.Errorf("fallback text shows raw Markdown: %q", answers[0].Text)
	}
	noThinking(t, e.thread(job))

	rows := e.replies(e.tenant)
	if len(rows) != 1 {
		t.Fatalf("%d replies rows", len(rows))
	}
	r := rows[0]
	if r.Outcome != konstruct.OutcomeAnswered || r.Provider != "p1" || r.Model != "fake-model" ||
		r.PromptTokens <= 0 || r.CompletionTokens <= 0 || r.TimeToFirstToken <= 0 || r.Latency < r.TimeToFirstToken ||
		r.MessageTS != job.PlaceholderTS || r.EventID != job.Message.EventID || r.ThreadTS != job.Message.TS {
		t.Errorf("replies row: %+v", r)
	}
	if n := e.states.count(e.tenant, job.Message.ChannelID, job.Message.TS); n != 1 {
		t.Errorf("thread engaged %d times, want 1", n)
	}
	if ok, err := e.q.Engaged(ctxT(t), e.tenant, job.Message.ChannelID, job.Message.TS); err != nil || !ok {
		t.Errorf("router does not see the thread engaged: %v %v", ok, err)
	}

	// A re-delivery of the finished job is a no-op.
	e.handle(job)
	if n := len(e.fakes[0].Requests()); n != 1 {
		t.Errorf("re-delivery asked the LLM again (%d requests)", n)
	}
	if n := len(e.answers(job)); n != 1 {
		t.Errorf("re-delivery: %d answers", n)
	}
}

func TestLLMDownLeavesAHumanError(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.fakes[0].SetHandler(func(llmfake.ChatRequest) llmfake.Reply { return llmfake.Reply{Status: 503} })
	job := e.mention("are you there?", "")
	err := e.w.Handle(deadline(t, 30*time.Second), job, firstTry)
	if !errors.Is(err, konstruct.ErrNoRetry) || konstruct.ErrorCode(err) != konstruct.EUNAVAILABLE {
		t.Fatalf("Handle = %v, want an EUNAVAILABLE not to be retried", err)
	}
	answers := e.answers(job)
	if len(answers) != 1 || answers[0].Text != textLLMDown {
		t.Fatalf("thread: %+v", answers)
	}
	noThinking(t, e.thread(job))
	rows := e.replies(e.tenant)
	if len(rows) != 1 || rows[0].Outcome != konstruct.OutcomeError || rows[0].Error != konstruct.EUNAVAILABLE {
		t.Errorf("rows: %+v", rows)
	}
	// Nothing is left for the janitor.
	if due, err := e.q.DueReplies(ctxT(t), 10); err != nil || len(due) != 0 {
		t.Errorf("replies left for the janitor: %v, %v", due, err)
	}
}
