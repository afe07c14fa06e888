package router_test

// End-to-end tests of the gateway: slacksim over a real websocket →
// bot.Manager → router → asynq on real Redis, tenants from real Postgres.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	dto "github.com/prometheus/client_model/go"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/bot"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/metrics"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/router"
	"github.com/konstruct/konstruct/slacksim"
	"github.com/konstruct/konstruct/spool"
	"github.com/konstruct/konstruct/store"
)

var _ router.Slack = (*bot.Web)(nil)
var _ router.TenantResolver = (*store.Store)(nil)

type gwOpts struct {
	perMinute   int
	sim         *slacksim.Server
	st          *store.Store
	rd          *testenv.Redis
	noWorkspace bool
	botEcho     bool // the sim echoes the bot's own posts as events, like Slack
}

// gateway is one daemon's gateway half, wired as cmd/ wires it.
type gateway struct {
	t        *testing.T
	sim      *slacksim.Server
	ws       slacksim.WorkspaceSpec
	st       *store.Store
	rd       *testenv.Redis
	tenantID string
	queue    string
	insp     *asynq.Inspector
	q        *queue.Queue
	intake   *spool.Recorder
	router   *router.Router
	manager  *bot.Manager
	mx       *metrics.Metrics
	policies *store.PolicyCache
}

func newGateway(t *testing.T, o gwOpts) *gateway {
	t.Helper()
	ctx := ctxT(t)
	g := &gateway{t: t, sim: o.sim, st: o.st, rd: o.rd, mx: metrics.New()}
	if g.sim == nil {
		// Slack's write limits are not what these tests are about (the
		// worker's tests are): an emulator without them, and budgets to match.
		g.sim = slacksim.New(slacksim.WithAckTimeout(time.Second), slacksim.WithBotEcho(o.botEcho), slacksim.WithRateLimits(false))
		if err := g.sim.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.sim.Close() })
	}
	if g.st == nil {
		g.st, _ = testenv.NewStore(t)
	}
	if g.rd == nil {
		g.rd = testenv.NewRedis(t)
	}
	if !o.noWorkspace {
		g.ws, g.tenantID = addWorkspace(t, g.sim, g.st, slacksim.WorkspaceSpec{})
	}
	g.queue = g.rd.Prefix + "replies"
	aopt, err := asynq.ParseRedisURI(g.rd.URL)
	if err != nil {
		t.Fatal(err)
	}
	g.insp = asynq.NewInspector(aopt)
	t.Cleanup(func() { _ = g.insp.Close() })
	g.q = g.rd.NewQueue(t, queue.Config{RatePerMinute: cmpOr(o.perMinute, 1000), RatePerUserPerMinute: cmpOr(o.perMinute, 1000),
		EngagedTTL: time.Minute, SlackTiers: map[string]queue.SlackTier{"chat.postMessage": {PerMinute: 60000, Burst: 1000, PerChannel: true}}})
	sp, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	g.intake = spool.NewRecorder(g.q, sp, spool.RecorderConfig{Metrics: g.mx})

	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	web := bot.NewWeb(bot.WebConfig{APIURL: g.sim.APIURL(), HTTPClient: hc})
	g.manager = bot.NewManager(bot.ManagerConfig{
		APIURL: g.sim.APIURL(), Source: g.st.ActiveWorkspaces, HTTPClient: hc, Metrics: g.mx,
		Recorder: g.intake,
		Ignore: func(m konstruct.Message) (string, bool) {
			out, skip := router.Prefilter(m)
			return string(out), skip
		},
		OnRevoked: func(ctx context.Context, team string) {
			if err := g.st.SetWorkspaceStatus(ctx, team, konstruct.WorkspaceRevoked); err != nil {
				t.Errorf("mark revoked: %v", err)
			}
		},
		OnWorkspaces: func(ws []konstruct.Workspace) { web.Set(ws); g.router.InvalidateTenants() },
	})
	g.policies = store.NewPolicyCache(g.st, 5*time.Second, nil)
	g.router = router.New(router.Config{Metrics: g.mx, Consumer: "gw-" + randomID()}, router.Deps{
		Intake: g.q, Tenants: g.st, Slack: web, Claims: g.q, Threads: g.q, Limiter: g.q, Replies: g.q, Enqueuer: g.q, Budgets: g.q,
		Policies: g.policies, Usage: g.q, Notes: g.q, Records: g.st, Feedback: g.st, Stops: g.q,
	})
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = g.manager.Run(runCtx) })
	wg.Go(func() { _ = g.router.Run(runCtx) })
	wg.Go(func() { _ = g.intake.Run(runCtx) })
	wg.Go(func() {
		_ = g.st.Listen(runCtx, map[string]func(string){
			store.WorkspacesChannel: func(string) { g.manager.Trigger() },
			store.PoliciesChannel:   g.policies.Invalidate,
		})
	})
	t.Cleanup(func() { stop(); wg.Wait() })
	if !o.noWorkspace {
		g.waitFor(10*time.Second, "sockets", func() bool { return g.sim.Connections(g.ws.AppID) >= 2 })
	}
	_ = ctx
	return g
}

func cmpOr[T comparable](a, b T) T {
	var zero T
	if a != zero {
		return a
	}
	return b
}

// addWorkspace installs a sim workspace for a new tenant in the store.
func addWorkspace(t *testing.T, sim *slacksim.Server, st *store.Store, spec slacksim.WorkspaceSpec) (slacksim.WorkspaceSpec, string) {
	t.Helper()
	ctx := ctxT(t)
	ws := sim.AddWorkspace(spec)
	tn, err := st.CreateTenant(ctx, "Acme "+ws.TeamID, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddWorkspace(ctx, konstruct.Workspace{TenantID: tn.ID, TeamID: ws.TeamID, TeamName: ws.TeamName,
		AppID: ws.AppID, BotUserID: ws.BotUserID, BotID: ws.BotID, AppToken: ws.AppToken, BotToken: ws.BotToken}); err != nil {
		t.Fatal(err)
	}
	return ws, tn.ID
}

func (g *gateway) waitFor(d time.Duration, what string, cond func() bool) {
	g.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			g.t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// jobs lists the queued reply jobs (no worker runs here: they wait for
// admission).
func (g *gateway) jobs() []konstruct.ReplyJob {
	g.t.Helper()
	jobs, err := g.q.Jobs(ctxT(g.t))
	if err != nil {
		g.t.Fatalf("list jobs: %v", err)
	}
	return jobs
}

// outcomes reads the router's decisions from its metric.
func (g *gateway) outcomes() map[string]int {
	out := map[string]int{}
	mfs, _ := g.mx.Registry.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "konstruct_route_outcomes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[label(m, "outcome")] = int(m.GetCounter().GetValue())
		}
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func total(o map[string]int) int {
	n := 0
	for _, v := range o {
		n += v
	}
	return n
}

// settle waits until the router decided on n messages in all and the sim
// has no unacked envelope, then a little more to catch strays.
func (g *gateway) settle(n int) map[string]int {
	g.t.Helper()
	g.waitFor(15*time.Second, fmt.Sprintf("%d routed messages", n), func() bool { return total(g.outcomes()) >= n && g.sim.Unacked() == 0 })
	time.Sleep(300 * time.Millisecond)
	o := g.outcomes()
	if total(o) != n {
		g.t.Fatalf("outcomes %v: %d decisions, want %d", o, total(o), n)
	}
	return o
}

func TestGatewayMentionOnePlaceholderOneTask(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gwOpts{botEcho: true})
	ch, user := g.ws.GeneralChannelID, g.ws.UserIDs[0]
	ts, err := g.sim.Mention(g.ws.TeamID, ch, user, "what is our refund policy?", "")
	if err != nil {
		t.Fatal(err)
	}
	o := g.settle(3) // app_mention + message twin + the echo of our placeholder
	if o["enqueued"] != 1 || o["not_addressed"] != 1 || o["bot"] != 1 {
		t.Errorf("outcomes %v", o)
	}
	jobs := g.jobs()
	if len(jobs) != 1 {
		t.Fatalf("%d tasks, want 1", len(jobs))
	}
	m := jobs[0].Message
	if m.TenantID != g.tenantID || m.TeamID != g.ws.TeamID || m.ChannelID != ch || m.TS != ts || m.User != user ||
		m.Text != "what is our refund policy?" || !m.IsMention || m.EventType != "app_mention" || m.EventID == "" {
		t.Errorf("message %+v", m)
	}
	view := g.sim.Thread(g.ws.TeamID, ch, ts)
	bots := view.BotReplies()
	if len(bots) != 1 || bots[0].Text != "Thinking..." || bots[0].TS != jobs[0].PlaceholderTS {
		t.Errorf("bot replies %+v, placeholder %q", bots, jobs[0].PlaceholderTS)
	}
}

func TestGatewayDMWithoutMention(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gwOpts{})
	ts, _ := g.sim.DM(g.ws.TeamID, g.ws.UserIDs[1], "hello there", "")
	g.settle(1)
	jobs := g.jobs()
	if len(jobs) != 1 || !jobs[0].Message.IsDM || jobs[0].Message.TS != ts || jobs[0].Message.ChannelType != konstruct.ChannelIM ||
		jobs[0].Message.Text != "hello there" || jobs[0].PlaceholderTS == "" {
		t.Fatalf("jobs %+v", jobs)
	}
}

// rawEvent builds a Socket Mode envelope as Slack sends it.
func rawEvent(ws slacksim.WorkspaceSpec, envelopeID, eventID string, retry int, ev map[string]any) []byte {
	payload := map[string]any{
		"type": "event_callback", "team_id": ws.TeamID, "api_app_id": ws.AppID, "event_id": eventID,
		"event_time": time.Now().Unix(), "event": ev,
		"authorizations": []map[string]any{{"team_id": ws.TeamID, "user_id": ws.BotUserID, "is_bot": true}},
	}
	b, _ := json.Marshal(map[string]any{"envelope_id": envelopeID, "type": "events_api", "payload": payload,
		"accepts_response_payload": false, "retry_attempt": retry, "retry_reason": map[bool]string{true: "timeout"}[retry > 0]})
	return b
}

func TestGatewayRedeliveryAndTwinsOneTask(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gwOpts{})
	ch, user := g.ws.GeneralChannelID, g.ws.UserIDs[0]
	// A real post (its own message event: not addressed), then Slack's
	// deliveries for it, crafted: the message twin first, then the
	// app_mention, then a redelivery of the app_mention (retry_attempt 1).
	ts, _ := g.sim.Post(g.ws.TeamID, ch, user, "ping", "")
	g.settle(1)
	text := "<@" + g.ws.BotUserID + "> ping"
	msgEv := map[string]any{"type": "message", "channel_type": "channel", "user": user, "text": text, "ts": ts, "channel": ch}
	menEv := map[string]any{"type": "app_mention", "user": user, "text": text, "ts": ts, "channel": ch}
	g.sim.SendRaw(g.ws.AppID, rawEvent(g.ws, "env-1", "EvTwin1", 0, msgEv))
	g.waitFor(5*time.Second, "twin routed", func() bool { return total(g.outcomes()) == 2 })
	g.sim.SendRaw(g.ws.AppID, rawEvent(g.ws, "env-2", "EvMention1", 0, menEv))
	g.waitFor(5*time.Second, "mention routed", func() bool { return total(g.outcomes()) == 3 })
	g.sim.SendRaw(g.ws.AppID, rawEvent(g.ws, "env-3", "EvMention1", 1, menEv))
	o := g.settle(4)
	if o["not_addressed"] != 2 || o["enqueued"] != 1 || o["duplicate"] != 1 {
		t.Errorf("outcomes %v", o)
	}
	if jobs := g.jobs(); len(jobs) != 1 || !jobs[0].Message.IsMention {
		t.Fatalf("jobs %+v", jobs)
	}
	if n := len(g.sim.Thread(g.ws.TeamID, ch, ts).BotReplies()); n != 1 {
		t.Errorf("%d placeholders", n)
	}
}

func TestGatewayIgnored(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gwOpts{})
	team, ch, user := g.ws.TeamID, g.ws.GeneralChannelID, g.ws.UserIDs[0]
	ts, _ := g.sim.Post(team, ch, user, "a plain post", "")
	g.settle(1)
	if err := g.sim.Edit(team, ch, ts, "<@"+g.ws.BotUserID+"> edited into a mention"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.sim.PostAsBot(team, ch, "BOTHER", "<@"+g.ws.BotUserID+"> from another bot", ""); err != nil {
		t.Fatal(err)
	}
	if err := g.sim.Delete(team, ch, ts); err != nil {
		t.Fatal(err)
	}
	g.sim.SendRaw(g.ws.AppID, rawEvent(g.ws, "env-join", "EvJoin", 0, map[string]any{
		"type": "message", "subtype": "channel_join", "channel_type": "channel", "user": user, "text": "<@" + user + "> has joined", "ts": "1.000001", "channel": ch}))
	g.sim.SendRaw(g.ws.AppID, rawEvent(g.ws, "env-own", "EvOwn", 0, map[string]any{
		"type": "message", "channel_type": "im", "user": g.ws.BotUserID, "text": "my own words", "ts": "1.000002", "channel": "D1"}))
	o := g.settle(6)
	if o["edit"] < 1 || o["bot"] != 2 || o["delete"] != 1 || o["join"] != 1 {
		t.Errorf("outcomes %v", o)
	}
	if jobs := g.jobs(); len(jobs) != 0 {
		t.Errorf("%d tasks", len(jobs))
	}
	if n := g.sim.Calls("chat.postMessage") + g.sim.Calls("chat.postEphemeral"); n != 0 {
		t.Errorf("%d Slack writes", n)
	}
}

func TestGatewayEngagedThreads(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gwOpts{})
	team, ch, user := g.ws.TeamID, g.ws.GeneralChannelID, g.ws.UserIDs[0]
	root, _ := g.sim.Mention(team, ch, user, "start a thread", "")
	g.settle(2)
	// The worker answers and engages the thread.
	if err := g.q.Engage(ctxT(t), g.tenantID, ch, root); err != nil {
		t.Fatal(err)
	}
	follow, _ := g.sim.Post(team, ch, user, "and a follow-up without mention", root)
	other, _ := g.sim.Post(team, ch, user, "unrelated top-level post", "")
	_, _ = g.sim.Post(team, ch, user, "a reply in a thread we never joined", other)
	o := g.settle(5)
	if o["enqueued"] != 2 || o["not_addressed"] != 3 {
		t.Errorf("outcomes %v", o)
	}
	jobs := g.jobs()
	var found bool
	for _, j := range jobs {
		if j.Message.TS == follow {
			found = j.Message.ThreadTS == root && !j.Message.IsMention && j.PlaceholderTS != ""
		}
	}
	if len(jobs) != 2 || !found {
		t.Fatalf("jobs %+v", jobs)
	}
	// The window expires without another exchange: a 1 ms window (Redis's
	// own TTL expiry, without sleeping through a real one).
	if err := g.q.EngageFor(ctxT(t), g.tenantID, ch, root, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	_, _ = g.sim.Post(team, ch, user, "too late", root)
	o = g.settle(6)
	if o["enqueued"] != 2 {
		t.Errorf("after expiry: outcomes %v", o)
	}
}

func TestGatewayRateLimit(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gwOpts{perMinute: 2})
	team, ch, user := g.ws.TeamID, g.ws.GeneralChannelID, g.ws.UserIDs[0]
	var last string
	for i := range 3 {
		last, _ = g.sim.Mention(team, ch, user, fmt.Sprintf("question %d", i), "")
		g.settle(2 * (i + 1))
	}
	if jobs := g.jobs(); len(jobs) != 2 {
		t.Fatalf("%d tasks, want 2", len(jobs))
	}
	if o := g.outcomes(); o["rate_limited"] != 1 {
		t.Errorf("outcomes %v", o)
	}
	eph := g.sim.Thread(team, ch, "").Ephemerals[user]
	if len(eph) != 1 || !strings.HasPrefix(eph[0], "I'm receiving too many requests right now — please try again in ") || !strings.HasSuffix(eph[0], " seconds.") {
		t.Errorf("ephemerals %q", eph)
	}
	if n := len(g.sim.Thread(team, ch, last).BotReplies()); n != 0 {
		t.Errorf("%d placeholders for the refused message", n)
	}
}

func TestGatewayUnknownWorkspaceNoSlackCall(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gwOpts{})
	// The app is installed in a second workspace the store does not know:
	// its events arrive on the same sockets.
	stranger := g.sim.AddWorkspace(slacksim.WorkspaceSpec{AppID: g.ws.AppID, AppToken: g.ws.AppToken})
	_, _ = g.sim.Mention(stranger.TeamID, stranger.GeneralChannelID, stranger.UserIDs[0], "anyone?", "")
	_, _ = g.sim.DM(stranger.TeamID, stranger.UserIDs[0], "hello?", "")
	o := g.settle(3)
	// The message twin of the mention is a top-level post without a
	// mention: the gateway drops it before any lookup.
	if o["unknown_workspace"] != 2 || o["not_addressed"] != 1 {
		t.Errorf("outcomes %v", o)
	}
	if n := g.sim.Calls("chat.postMessage") + g.sim.Calls("chat.postEphemeral") + g.sim.Calls("chat.update"); n != 0 {
		t.Errorf("%d Slack writes for an unknown workspace", n)
	}
	if jobs := g.jobs(); len(jobs) != 0 {
		t.Errorf("%d tasks", len(jobs))
	}
}

func TestGatewayHotAddRemoveAndRevoke(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gwOpts{})
	ctx := ctxT(t)

	// Added while running: connected and answering within 10 s.
	added, _ := addWorkspace(t, g.sim, g.st, slacksim.WorkspaceSpec{})
	start := time.Now()
	g.waitFor(10*time.Second, "new workspace connected", func() bool { return g.sim.Connections(added.AppID) == 2 })
	t.Logf("connected %v after workspace add", time.Since(start).Round(time.Millisecond))
	_, _ = g.sim.DM(added.TeamID, added.UserIDs[0], "hi new bot", "")
	g.settle(1)

	// Removed: disconnected within 10 s, and its events no longer answered.
	if err := g.st.RemoveWorkspace(ctx, added.TeamID); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	g.waitFor(10*time.Second, "removed workspace disconnected", func() bool { return g.sim.Connections(added.AppID) == 0 })
	t.Logf("disconnected %v after workspace remove", time.Since(start).Round(time.Millisecond))

	// Revoked: marked in the database, the other workspace unaffected.
	g.sim.RevokeToken(g.ws.AppToken)
	g.waitFor(10*time.Second, "revoked in the store", func() bool {
		w, err := g.st.TenantForTeam(ctx, g.ws.TeamID)
		return err == nil && w.Status == konstruct.WorkspaceRevoked
	})
	other, _ := addWorkspace(t, g.sim, g.st, slacksim.WorkspaceSpec{})
	g.waitFor(10*time.Second, "other workspace connected", func() bool { return g.sim.Connections(other.AppID) == 2 })
	_, _ = g.sim.DM(other.TeamID, other.UserIDs[0], "still answering?", "")
	o := g.settle(2)
	if o["enqueued"] != 2 {
		t.Errorf("outcomes %v", o)
	}
	for _, s := range g.manager.States() {
		if s.TeamID == g.ws.TeamID && s.Connected > 0 {
			t.Errorf("revoked workspace still connected: %+v", s)
		}
	}
}

func TestGatewayRefreshLosesNothing(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gwOpts{})
	var want []string
	for i := range 30 {
		switch i {
		case 10:
			g.sim.Disconnect(g.ws.AppID, "refresh_requested")
		case 20:
			g.sim.DropConnections(g.ws.AppID)
		}
		ts, err := g.sim.DM(g.ws.TeamID, g.ws.UserIDs[0], fmt.Sprintf("message %d", i), "")
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, ts)
	}
	// Envelopes caught in a dropped socket come again (duplicates): what
	// counts is that every post gets its one task.
	g.waitFor(15*time.Second, "30 enqueued", func() bool { return g.outcomes()["enqueued"] >= 30 && g.sim.Unacked() == 0 })
	time.Sleep(300 * time.Millisecond)
	t.Logf("outcomes %v", g.outcomes())
	got := map[string]bool{}
	for _, j := range g.jobs() {
		got[j.Message.TS] = true
	}
	for _, ts := range want {
		if !got[ts] {
			t.Errorf("message %s lost", ts)
		}
	}
}

func TestGatewayMalformedEnvelope(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gwOpts{})
	g.sim.SendRaw(g.ws.AppID, []byte(`{"envelope_id":"junk-1","type":"events_api","payload":{"type":"event_callback","event":{"type":"something_new"}}}`))
	g.sim.SendRaw(g.ws.AppID, []byte(`{"envelope_id":"junk-2","type":"events_api","payload":{"type":"event_callback","team_id":"T","event":{"type":"message"}}}`))
	g.sim.SendRaw(g.ws.AppID, []byte(`{"envelope_id":"junk-3"`))
	_, _ = g.sim.DM(g.ws.TeamID, g.ws.UserIDs[0], "after junk", "")
	g.settle(1)
	if jobs := g.jobs(); len(jobs) != 1 || jobs[0].Message.Text != "after junk" {
		t.Fatalf("jobs %+v", jobs)
	}
}

func TestGatewayPlaceholderFailsStillEnqueued(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gwOpts{})
	g.sim.InjectFault("chat.postMessage", slacksim.Fault{Status: http.StatusInternalServerError, Count: 1})
	_, _ = g.sim.DM(g.ws.TeamID, g.ws.UserIDs[0], "slack is flaky", "")
	g.settle(1)
	jobs := g.jobs()
	if len(jobs) != 1 || jobs[0].PlaceholderTS != "" {
		t.Fatalf("jobs %+v", jobs)
	}
}

func TestGatewayTwoDaemonsSameApp(t *testing.T) {
	t.Parallel()
	a := newGateway(t, gwOpts{})
	b := newGateway(t, gwOpts{sim: a.sim, st: a.st, rd: a.rd, noWorkspace: true})
	a.waitFor(10*time.Second, "both gateways connected", func() bool { return a.sim.Connections(a.ws.AppID) == 4 })
	const n = 10
	for i := range n {
		if _, err := a.sim.Mention(a.ws.TeamID, a.ws.GeneralChannelID, a.ws.UserIDs[0], fmt.Sprintf("q%d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	a.waitFor(15*time.Second, "all routed", func() bool { return total(a.outcomes())+total(b.outcomes()) == 2*n })
	time.Sleep(300 * time.Millisecond)
	if jobs := a.jobs(); len(jobs) != n {
		t.Fatalf("%d tasks for %d posts", len(jobs), n)
	}
	if a.outcomes()["enqueued"]+b.outcomes()["enqueued"] != n {
		t.Errorf("outcomes a %v b %v", a.outcomes(), b.outcomes())
	}
	t.Logf("enqueued by a: %d, by b: %d", a.outcomes()["enqueued"], b.outcomes()["enqueued"])
}

func randomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
