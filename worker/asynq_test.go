package worker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/llm/llmfake"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/slacksim"
)

// enqueue puts a job on the queue the way the router does.
func (e *env) enqueue(job konstruct.ReplyJob) {
	e.t.Helper()
	if err := e.q.Enqueue(ctxT(e.t), job); err != nil {
		e.t.Fatal(err)
	}
}

// startServer runs a Server on the queue, as a process does (its own
// connection, with the given shutdown timeout), until stop is called or the
// test ends.
func (e *env) startServer(shutdownTimeout time.Duration) (w *Server, stop func()) {
	e.t.Helper()
	q := e.rdb.NewQueue(e.t, queue.Config{ShutdownTimeout: shutdownTimeout})
	cfg := e.cfg
	cfg.Concurrency = 4
	w = New(cfg, Deps{Agents: e.st, Records: e.st, Slack: e.web, LLM: e.llm, Tasks: q, States: q, Budgets: q})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	e.t.Cleanup(stop)
	return w, stop
}

func (e *env) waitAnswer(job konstruct.ReplyJob, want string) slacksim.ThreadView {
	e.t.Helper()
	v, err := e.sim.WaitThread(deadline(e.t, 20*time.Second), job.Message.TeamID, job.Message.ChannelID, job.Message.TS, func(v slacksim.ThreadView) bool {
		for _, m := range v.Messages {
			if m.TS == job.PlaceholderTS && m.Text == want {
				return true
			}
		}
		return false
	})
	if err != nil {
		e.t.Fatalf("no answer %q: %v\n%+v", want, err, v.BotReplies())
	}
	return v
}

func TestThroughAsynq(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startServer(5 * time.Second)
	job := e.mention("via the queue", "")
	e.enqueue(job)
	e.waitAnswer(job, "Echo: via the queue")
	if n := len(e.answers(job)); n != 1 {
		t.Errorf("%d answers", n)
	}
}

// A worker shut down mid-stream hands its task back; the next one resumes
// in the same placeholder, and the thread shows one answer.
func TestShutdownMidStreamThenRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var calls atomic.Int32
	started := make(chan struct{})
	e.fakes[0].SetHandler(func(llmfake.ChatRequest) llmfake.Reply {
		if calls.Add(1) == 1 {
			close(started)
			return llmfake.Reply{Text: "half an answer and then nothing", TokenDelay: 10 * time.Millisecond, HangAfter: 3}
		}
		return llmfake.Reply{Text: "The whole answer."}
	})
	_, stop1 := e.startServer(300 * time.Millisecond)
	job := e.mention("slow one", "")
	e.enqueue(job)
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the task never reached the LLM")
	}
	if _, err := e.sim.WaitThread(deadline(t, 10*time.Second), job.Message.TeamID, job.Message.ChannelID, job.Message.TS, func(v slacksim.ThreadView) bool {
		for _, m := range v.Messages {
			if m.TS == job.PlaceholderTS && strings.HasPrefix(m.Text, "half") {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	stop1()
	e.startServer(5 * time.Second)
	e.waitAnswer(job, "The whole answer.")
	if n := len(e.answers(job)); n != 1 {
		t.Errorf("%d answers", n)
	}
}

// One tenant's flood on a slow model never takes every worker: with
// concurrency 4 (a share of 2 per tenant), another tenant's question is
// answered while the first tenant's replies are all stuck.
func TestSlowTenantDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var maraStarted atomic.Int32
	e.fakes[0].SetHandler(func(r llmfake.ChatRequest) llmfake.Reply {
		if strings.Contains(r.Messages[0].Content, "Your name is Otto") {
			return llmfake.Reply{Text: "Otto here: " + r.LastUser()}
		}
		maraStarted.Add(1)
		select { // Mara's model is stuck until the test ends
		case <-release:
		case <-time.After(30 * time.Second):
		}
		return llmfake.Reply{Text: "Mara, finally"}
	})
	otto := e.addTenant(konstruct.Agent{Name: "Otto", Role: "IT Helpdesk", Persona: "Terse."})
	ws2 := e.sim.AddWorkspace(slacksim.WorkspaceSpec{})
	e.web.Set([]konstruct.Workspace{
		{TeamID: e.ws.TeamID, BotUserID: e.ws.BotUserID, BotToken: e.ws.BotToken, Status: konstruct.WorkspaceActive},
		{TeamID: ws2.TeamID, BotUserID: ws2.BotUserID, BotToken: ws2.BotToken, Status: konstruct.WorkspaceActive},
	})
	w, _ := e.startServer(time.Second)
	if got := w.cfg.TenantConcurrency; got != 2 {
		t.Fatalf("tenant share = %d, want half of 4", got)
	}
	for i := range 6 {
		e.enqueue(e.mentionIn(e.tenant, e.ws, fmt.Sprintf("mara q%d", i), "", true))
	}
	// Let Mara's tasks take what they can before Otto asks.
	waitFor(t, func() bool { return maraStarted.Load() >= 2 })
	job := e.mentionIn(otto, ws2, "is the VPN down?", "", true)
	e.enqueue(job)
	e.waitAnswer(job, "Otto here: is the VPN down?")
	if n := maraStarted.Load(); n != 2 {
		t.Errorf("%d of Mara's replies reached the model at once, want her share of 2", n)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	ctx := deadline(t, 20*time.Second)
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met in time")
		case <-time.After(10 * time.Millisecond):
		}
	}
}
