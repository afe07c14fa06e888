package worker

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/llm"
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
	cfg.Concurrency = cmp.Or(cfg.Concurrency, 4)
	w = New(cfg, Deps{Agents: e.st, Records: e.st, Slack: e.web, LLM: e.llm, Tasks: q, States: q, Budgets: q, Policies: e.pols, Usage: q, Stops: q})
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

// Two tenants flood a slow model while a quiet tenant asks: the quiet
// tenant's question is admitted ahead of the floods' backlog (the workers
// are shared among the tenants busy now, with room kept for one with
// nothing running), and takes the next free LLM slot (the provider's slots
// are shared the same way). Every question is answered once.
func TestQuietTenantNotBehindTwoFloods(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withSim(slacksim.WithRateLimits(false))) // fairness, not Slack's limits, is under test

	release := make(chan struct{})
	var inLLM, maxInLLM atomic.Int32
	var order []string
	var mu sync.Mutex
	e.fakes[0].SetHandler(func(r llmfake.ChatRequest) llmfake.Reply {
		n := inLLM.Add(1)
		defer inLLM.Add(-1)
		for {
			m := maxInLLM.Load()
			if n <= m || maxInLLM.CompareAndSwap(m, n) {
				break
			}
		}
		q := r.LastUser()
		if !strings.HasPrefix(q, "quiet") {
			select { // the floods' model is slow: held until the test lets go
			case <-release:
			case <-time.After(20 * time.Second):
			}
		}
		mu.Lock()
		order = append(order, q)
		mu.Unlock()
		return llmfake.Reply{Text: "re: " + q}
	})
	// Three tenants, three workspaces.
	a := e.addTenant(konstruct.Agent{Name: "Ann", Role: "Ops", Persona: "Terse."})
	b := e.addTenant(konstruct.Agent{Name: "Bob", Role: "Ops", Persona: "Terse."})
	wsA, wsB := e.sim.AddWorkspace(slacksim.WorkspaceSpec{}), e.sim.AddWorkspace(slacksim.WorkspaceSpec{})
	e.web.Set([]konstruct.Workspace{
		{TeamID: e.ws.TeamID, BotUserID: e.ws.BotUserID, BotToken: e.ws.BotToken, Status: konstruct.WorkspaceActive},
		{TeamID: wsA.TeamID, BotUserID: wsA.BotUserID, BotToken: wsA.BotToken, Status: konstruct.WorkspaceActive},
		{TeamID: wsB.TeamID, BotUserID: wsB.BotUserID, BotToken: wsB.BotToken, Status: konstruct.WorkspaceActive},
	})
	// 8 workers, and an LLM that serves 4 at once.
	e.cfg.Concurrency = 8
	e.llmSlots(4)
	e.startServer(time.Second)
	var flood []konstruct.ReplyJob
	for i := range 12 {
		flood = append(flood, e.mentionIn(a, wsA, fmt.Sprintf("flood A %d", i), "", true), e.mentionIn(b, wsB, fmt.Sprintf("flood B %d", i), "", true))
	}
	for _, j := range flood {
		e.enqueue(j)
	}
	waitFor(t, func() bool { return inLLM.Load() == 4 }) // the floods hold every slot
	quiet := e.mentionIn(e.tenant, e.ws, "quiet question", "", true)
	e.enqueue(quiet)
	waitFor(t, func() bool { // admitted ahead of the backlog, and waiting for a slot
		w, _ := e.q.LLMWaiting(ctxT(t), "p1")
		return slices.Contains(w, e.tenant)
	})
	// One flood reply finishes: its slot goes to the quiet tenant, not to
	// the next of the floods' backlog.
	release <- struct{}{}
	e.waitAnswer(quiet, "re: quiet question")
	mu.Lock()
	got := slices.Clone(order)
	mu.Unlock()
	if len(got) > 2 || got[len(got)-1] != "quiet question" {
		t.Errorf("answered before the quiet question: %q; want at most the one flood reply released", got)
	}
	close(release)
	for _, j := range flood {
		e.waitAnswer(j, "re: "+j.Message.Text[strings.Index(j.Message.Text, "> ")+2:])
	}
	if m := maxInLLM.Load(); m > 4 {
		t.Errorf("%d requests at once on an LLM with 4 slots", m)
	}
}

// llmSlots gives the fake LLM a bound of n requests at once, shared
// through the queue as the daemon does.
func (e *env) llmSlots(n int) {
	e.t.Helper()
	c, err := llm.New(llm.Config{Providers: []llm.Provider{{Name: "p1", BaseURL: e.fakes[0].URL(), MaxConcurrency: n}},
		DefaultModel: "fake-model", MaxRetries: -1, Gate: e.q.AcquireLLM})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.Close)
	e.llm = c
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
