package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/bot"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/llm"
	"github.com/konstruct/konstruct/llm/llmfake"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/slacksim"
	"github.com/konstruct/konstruct/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// env is one test's world: a Slack emulator, one or more OpenAI-compatible
// fakes, a private Postgres database and Redis prefix, and a Server.
type env struct {
	t      *testing.T
	sim    *slacksim.Server
	ws     slacksim.WorkspaceSpec
	web    *bot.Web
	fakes  []*llmfake.Server
	llm    *llm.Client
	st     *store.Store
	rdb    *testenv.Redis
	q      *queue.Queue
	clock  *clock
	states *engager
	pols   *store.PolicyCache
	tenant string
	w      *Server
	cfg    Config
}

type envOption func(*envSetup)

type envSetup struct {
	simOpts   []slacksim.Option
	providers int
	cfg       Config
	qcfg      queue.Config
	timeouts  llm.Timeouts
	agent     konstruct.Agent
}

func withProviders(n int) envOption { return func(s *envSetup) { s.providers = n } }
func withSim(o ...slacksim.Option) envOption {
	return func(s *envSetup) { s.simOpts = append(s.simOpts, o...) }
}
func withConfig(f func(*Config)) envOption { return func(s *envSetup) { f(&s.cfg) } }
func withQueue(f func(*queue.Config)) envOption {
	return func(s *envSetup) { f(&s.qcfg) }
}

// firstTry is the first delivery of a task that may be retried.
var firstTry = konstruct.Delivery{MaxRetry: queue.TaskMaxRetry}

func withTimeouts(t llm.Timeouts) envOption { return func(s *envSetup) { s.timeouts = t } }
func ctxT(t *testing.T) context.Context     { return t.Context() }
func deadline(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

var tenantSeq atomic.Int64

// clock is the janitor's clock in the tests: real time, moved forward on
// demand instead of sleeping through a deadline.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// engager is the real queue, counting EngageFor calls on their way.
type engager struct {
	*queue.Queue
	mu      sync.Mutex
	engaged map[string]int
	ttls    map[string]time.Duration
}

func (g *engager) EngageFor(ctx context.Context, tenantID, channelID, threadTS string, ttl time.Duration) error {
	g.mu.Lock()
	if g.engaged == nil {
		g.engaged, g.ttls = map[string]int{}, map[string]time.Duration{}
	}
	g.engaged[tenantID+"/"+channelID+"/"+threadTS]++
	g.ttls[tenantID+"/"+channelID+"/"+threadTS] = ttl
	g.mu.Unlock()
	return g.Queue.EngageFor(ctx, tenantID, channelID, threadTS, ttl)
}

func (g *engager) ttl(tenantID, channelID, threadTS string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ttls[tenantID+"/"+channelID+"/"+threadTS]
}

func (g *engager) count(tenantID, channelID, threadTS string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.engaged[tenantID+"/"+channelID+"/"+threadTS]
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	setup := envSetup{providers: 1, agent: konstruct.Agent{
		Name: "Mara", Role: "Customer Support",
		Persona:      "Warm, precise and brief. Loves checklists.",
		Instructions: "Acme sells anvils. Refunds take 5 business days.",
	}}
	for _, o := range opts {
		o(&setup)
	}
	e := &env{t: t}

	e.sim = slacksim.New(setup.simOpts...)
	if err := e.sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.sim.Close() })
	e.ws = e.sim.AddWorkspace(slacksim.WorkspaceSpec{})

	tr := http.DefaultTransport.(*http.Transport).Clone()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	e.web = bot.NewWeb(bot.WebConfig{APIURL: e.sim.APIURL(), HTTPClient: hc})
	e.web.Set([]konstruct.Workspace{{TeamID: e.ws.TeamID, BotUserID: e.ws.BotUserID, BotID: e.ws.BotID, BotToken: e.ws.BotToken, Status: konstruct.WorkspaceActive}})

	var providers []llm.Provider
	for i := range setup.providers {
		f := llmfake.New()
		t.Cleanup(f.Close)
		e.fakes = append(e.fakes, f)
		providers = append(providers, llm.Provider{Name: fmt.Sprintf("p%d", i+1), BaseURL: f.URL()})
	}
	client, err := llm.New(llm.Config{Providers: providers, DefaultModel: "fake-model", Timeouts: setup.timeouts, MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	e.llm = client

	e.st, _ = testenv.NewStore(t)
	e.rdb = testenv.NewRedis(t)
	e.clock = &clock{}
	setup.qcfg.Now = e.clock.now
	setup.cfg.Now = e.clock.now
	e.q = e.rdb.NewQueue(t, setup.qcfg)
	e.states = &engager{Queue: e.q}
	e.pols = store.NewPolicyCache(e.st, time.Millisecond, nil)
	e.tenant = e.addTenant(setup.agent)

	e.cfg = setup.cfg
	e.w = e.newServer()
	return e
}

func (e *env) newServer() *Server {
	return New(e.cfg, Deps{Agents: e.st, Records: e.st, Slack: e.web, LLM: e.llm, Tasks: e.q, States: e.states, Budgets: e.q,
		Policies: e.pols, Usage: e.q, Stops: e.q})
}

func (e *env) addTenant(a konstruct.Agent) string {
	e.t.Helper()
	n := tenantSeq.Add(1)
	ten, err := e.st.CreateTenant(ctxT(e.t), fmt.Sprintf("Tenant %d", n), fmt.Sprintf("tenant-%d-%d", n, time.Now().UnixNano()%1e6))
	if err != nil {
		e.t.Fatal(err)
	}
	a.TenantID = ten.ID
	if _, err := e.st.SetAgent(ctxT(e.t), a); err != nil {
		e.t.Fatal(err)
	}
	return ten.ID
}

func (e *env) channel() string { return e.ws.GeneralChannelID }

// mention posts a mention (in thread when threadTS is set) and the router's
// placeholder, and returns the job a router would enqueue.
func (e *env) mention(text, threadTS string) konstruct.ReplyJob {
	e.t.Helper()
	return e.mentionIn(e.tenant, e.ws, text, threadTS, true)
}

func (e *env) mentionIn(tenant string, ws slacksim.WorkspaceSpec, text, threadTS string, placeholder bool) konstruct.ReplyJob {
	e.t.Helper()
	ts, err := e.sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], text, threadTS)
	if err != nil {
		e.t.Fatal(err)
	}
	m := konstruct.Message{
		TenantID: tenant, TeamID: ws.TeamID,
		EventID: "Ev" + strings.ReplaceAll(ts, ".", ""), EventType: "app_mention", EventTime: time.Now(),
		ChannelID: ws.GeneralChannelID, ChannelType: konstruct.ChannelPublic, User: ws.UserIDs[0],
		Text: "<@" + ws.BotUserID + "> " + text, TS: ts, ThreadTS: threadTS, IsMention: true, ReceivedAt: time.Now(),
	}
	job := konstruct.ReplyJob{Message: m, EnqueuedAt: time.Now()}
	if placeholder {
		ph, err := e.web.Post(ctxT(e.t), ws.TeamID, ws.GeneralChannelID, m.ReplyThreadTS(), konstruct.Content{Text: konstruct.TextThinking})
		if err != nil {
			e.t.Fatal(err)
		}
		job.PlaceholderTS = ph
	}
	return job
}

func (e *env) thread(job konstruct.ReplyJob) slacksim.ThreadView {
	return e.sim.Thread(job.Message.TeamID, job.Message.ChannelID, job.Message.ReplyThreadTS())
}

// answers are the bot's messages in the thread after the job's post.
func (e *env) answers(job konstruct.ReplyJob) []slacksim.ViewMessage {
	var out []slacksim.ViewMessage
	for _, m := range e.thread(job).BotReplies() {
		if konstruct.TSBefore(job.Message.TS, m.TS) {
			out = append(out, m)
		}
	}
	return out
}

// markdown returns the text of a message's markdown block ("" if none).
func markdownOf(t *testing.T, m slacksim.ViewMessage) string {
	t.Helper()
	if len(m.Blocks) == 0 {
		return ""
	}
	var blocks []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(m.Blocks, &blocks); err != nil {
		t.Fatalf("blocks: %v", err)
	}
	var b strings.Builder
	for _, bl := range blocks {
		if bl.Type == "markdown" {
			b.WriteString(bl.Text)
		}
	}
	return b.String()
}

// replies returns the tenant's replies rows.
func (e *env) replies(tenant string) []konstruct.Reply {
	e.t.Helper()
	rs, err := e.st.Replies(ctxT(e.t), tenant, 100)
	if err != nil {
		e.t.Fatal(err)
	}
	return rs
}

// handle runs Handle and fails the test on an unexpected error.
func (e *env) handle(job konstruct.ReplyJob) {
	e.t.Helper()
	if err := e.w.Handle(deadline(e.t, 60*time.Second), job, firstTry); err != nil {
		e.t.Fatalf("Handle: %v", err)
	}
}

func noThinking(t *testing.T, v slacksim.ThreadView) {
	t.Helper()
	for _, m := range v.Messages {
		if m.IsBot && strings.Contains(m.Text, "Thinking") {
			t.Errorf("a placeholder is left behind: %+v", m)
		}
	}
}
