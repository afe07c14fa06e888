package bot

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/metrics"
)

// MaxConnectionsPerApp is Slack's limit of concurrent Socket Mode
// connections per app.
const MaxConnectionsPerApp = 10

// ManagerConfig configures a Manager.
type ManagerConfig struct {
	// APIURL is the Web API base with its trailing slash (slack.api_url).
	APIURL string
	// ConnectionsPerWorkspace is how many sockets each app keeps open
	// (slack.connections_per_workspace, 1–10, default 2): with two, a
	// refresh of one never leaves the workspace deaf.
	ConnectionsPerWorkspace int
	// Source lists the active workspaces, tokens decrypted.
	Source func(ctx context.Context) ([]konstruct.Workspace, error)
	// ReconcileEvery is how often Source is asked (default 5 s); Trigger
	// asks at once.
	ReconcileEvery time.Duration
	// OnRevoked is called once per workspace whose app token Slack refused
	// for good; it should mark the workspace revoked so Source drops it.
	OnRevoked func(ctx context.Context, teamID string)
	// OnWorkspaces is called with the active workspaces whenever the set
	// (or a token) changed, and once after the first successful reconcile.
	OnWorkspaces func([]konstruct.Workspace)
	// Recorder records the messages of envelopes durably before their ack
	// (required).
	Recorder Recorder
	// Ignore says which messages need no record because the payload alone
	// shows the router would drop them (bot posts, edits, channel chatter),
	// and the router's outcome for the metric. nil records every message.
	Ignore func(konstruct.Message) (outcome string, ignore bool)
	// RecordTimeout bounds one group commit (default 2 s, under Slack's
	// ~3 s redelivery): past it the envelopes stay unacked.
	RecordTimeout time.Duration
	// DrainTimeout bounds, at shutdown, the wait for the envelopes taken to
	// be recorded and acked before the sockets close (default 3 s).
	DrainTimeout time.Duration
	// QueueSize bounds the envelopes between the read loops and their ack
	// (default 8192: a few seconds of a burst); without room an envelope
	// stays unacked and Slack redelivers it.
	QueueSize int
	// AckTimeout is the write deadline of an ack (default 1 s); a socket
	// whose ack could not be written is replaced.
	AckTimeout time.Duration
	// PingInterval is how often Slack is expected to PING (default 30 s): a
	// socket that receives no frame and no PING for twice that is replaced.
	PingInterval time.Duration
	// RetryAfterFailure is how long an app whose Socket Mode Slack disabled
	// (link_disabled) waits before it tries again (default 1 min). Other
	// failures are retried with a jittered backoff of 100 ms doubling to 30 s.
	RetryAfterFailure time.Duration
	// Normalizers is how many goroutines decode envelopes into messages
	// and classify them (default GOMAXPROCS, at least 2).
	Normalizers int
	// Leases, when set, share the apps' sockets with the install's other
	// gateways (shard.go): each app is held by up to two gateways, never by
	// more than Slack's 10 sockets allow. nil: this gateway connects every
	// app (one gateway per install).
	Leases Leases
	// GatewayID names this gateway among the others (default
	// hostname:pid:random).
	GatewayID  string
	Logger     *slog.Logger
	Metrics    *metrics.Metrics
	HTTPClient *http.Client
	// Tracer starts a trace for each message recorded (nil: tracing off).
	Tracer trace.Tracer
}

// SocketState is the state of one workspace's sockets, for /readyz.
type SocketState struct {
	TeamID      string `json:"team_id"`
	AppID       string `json:"app_id,omitempty"`
	Connections int    `json:"connections"`
	Connected   int    `json:"connected"`
	Revoked     bool   `json:"revoked,omitempty"`
	// Skipped: the workspace is not served (its tokens do not decrypt);
	// LastError says why and what to do.
	Skipped   bool   `json:"skipped,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// Manager keeps the Socket Mode connections of every active workspace open
// and takes in their envelopes: each is normalized off the read loop and
// acked once its message is durably recorded (intake.go), or at once when
// it needs no record. Sockets belong to app-level tokens: workspaces
// sharing one app share its connections.
//
// Shutdown: when Run's context ends the manager takes no new envelopes
// (unread or untaken ones stay unacked, so Slack hands them to another
// connection or daemon), lets the ones taken be recorded and acked within
// DrainTimeout, then closes the sockets.
type Manager struct {
	cfg    ManagerConfig
	log    *slog.Logger
	intake *intake
	shard  *shard // nil without Leases

	trigger chan struct{}
	running atomic.Bool // Run was called

	wg sync.WaitGroup // every slot and session reader

	statesMu sync.Mutex
	groups   []*appGroup   // for States
	skipped  []SocketState // workspaces Source listed with a problem
	closing  []*appGroup   // stopped, sockets maybe still closing (appsUp)

	lastSet uint64 // fingerprint of the set given to OnWorkspaces

	logMu          sync.Mutex
	lastUnrecorded time.Time

	// dropAck, in tests, makes an ack be skipped (as if it were lost).
	dropAck func(envelopeID string) bool
	// onSession, in tests, observes socket life: "hello" when a socket of
	// slot conn (its gen-th connect) is up, "closed" when its reader ended.
	onSession func(conn, gen int, event string)
	// beforeNormalize, in tests, runs in a classifier before each envelope.
	beforeNormalize func()
}

func (m *Manager) hook(conn, gen int, event string) {
	if m.onSession != nil {
		m.onSession(conn, gen, event)
	}
}

// NewManager returns a Manager; Run starts it.
func NewManager(cfg ManagerConfig) *Manager {
	if cfg.ConnectionsPerWorkspace <= 0 {
		cfg.ConnectionsPerWorkspace = 2
	}
	cfg.ConnectionsPerWorkspace = min(cfg.ConnectionsPerWorkspace, MaxConnectionsPerApp)
	cfg.ReconcileEvery = cmp.Or(cfg.ReconcileEvery, 5*time.Second)
	cfg.QueueSize = cmp.Or(cfg.QueueSize, 8192)
	cfg.RecordTimeout = cmp.Or(cfg.RecordTimeout, 2*time.Second)
	cfg.DrainTimeout = cmp.Or(cfg.DrainTimeout, 3*time.Second)
	cfg.AckTimeout = cmp.Or(cfg.AckTimeout, time.Second)
	cfg.PingInterval = cmp.Or(cfg.PingInterval, 30*time.Second)
	if cfg.Normalizers <= 0 {
		cfg.Normalizers = max(2, runtime.GOMAXPROCS(0))
	}
	cfg.RetryAfterFailure = cmp.Or(cfg.RetryAfterFailure, time.Minute)
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Recorder == nil {
		panic("bot: ManagerConfig.Recorder is required")
	}
	m := &Manager{
		cfg:     cfg,
		log:     log.With("component", "gateway"),
		trigger: make(chan struct{}, 1),
	}
	m.intake = newIntake(m)
	if cfg.Leases != nil {
		m.shard = newShard(m, cfg.Leases, cfg.GatewayID)
	}
	return m
}

// Trigger asks for a reconcile now (wired to the store's LISTEN/NOTIFY).
func (m *Manager) Trigger() {
	select {
	case m.trigger <- struct{}{}:
	default:
	}
}

// errRunTwice is returned by a second Run.
var errRunTwice = errors.New("bot: Manager.Run called twice")

// Run reconciles the connections with Source until ctx ends, then drains
// the intake, stops every socket and returns nil.
func (m *Manager) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errRunTwice
	}
	m.intake.start()
	// The sockets outlive ctx a little: the envelopes taken are acked
	// before they close.
	sockCtx, stopSockets := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSockets()

	apps := map[string]*appGroup{}
	ticker := time.NewTicker(m.cfg.ReconcileEvery)
	defer ticker.Stop()
	var sharding sync.WaitGroup
	if m.shard != nil {
		sharding.Go(func() { m.shard.run(ctx) })
	}
	for {
		m.reconcile(ctx, sockCtx, apps)
		select {
		case <-ctx.Done():
			m.intake.drain(m.cfg.DrainTimeout)
			stopSockets()
			for _, g := range apps {
				g.stop()
			}
			m.wg.Wait()
			sharding.Wait()
			if m.shard != nil {
				m.shard.leave() // the sockets are closed: the others take over
			}
			<-m.intake.committed // bounded by the last Record's timeout
			m.setStates(nil)
			m.log.Info("gateway stopped")
			return nil
		case <-ticker.C:
		case <-m.trigger:
		}
	}
}

// reconcile makes the running apps match Source; new apps' sockets run
// under sockCtx.
func (m *Manager) reconcile(ctx, sockCtx context.Context, apps map[string]*appGroup) {
	if m.cfg.Source == nil {
		return
	}
	if ctx.Err() != nil {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	list, err := m.cfg.Source(sctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("list workspaces", "error", err)
		}
		return
	}
	active := make([]konstruct.Workspace, 0, len(list))
	want := map[string][]konstruct.Workspace{}
	var skipped []SocketState
	for _, w := range list {
		if w.Status != "" && w.Status != konstruct.WorkspaceActive {
			continue
		}
		if w.Problem != "" {
			// One workspace that cannot be served must not keep the
			// others from connecting: reported, skipped.
			skipped = append(skipped, SocketState{TeamID: w.TeamID, AppID: w.AppID, Skipped: true, LastError: w.Problem})
			continue
		}
		active = append(active, w)
		if w.AppToken == "" {
			m.log.Warn("workspace without app token", "team_id", w.TeamID)
			continue
		}
		want[w.AppToken] = append(want[w.AppToken], w)
	}
	if m.shard != nil {
		m.shard.update(ctx, slices.Collect(maps.Keys(want)))
		for tok := range want {
			if !m.shard.allowed(tok) {
				delete(want, tok) // another gateway holds it
			}
		}
	}

	for tok, g := range apps {
		if _, ok := want[tok]; !ok {
			m.log.Info("disconnecting app", "app_id", g.appIDOr(), "teams", g.teamIDs())
			g.stop()
			delete(apps, tok)
			m.statesMu.Lock()
			m.closing = append(m.closing, g)
			m.statesMu.Unlock()
		}
	}
	for tok, ws := range want {
		if g, ok := apps[tok]; ok {
			g.setTeams(ws)
			continue
		}
		g := newAppGroup(m, tok, ws)
		apps[tok] = g
		m.log.Info("connecting app", "app_id", g.appIDOr(), "teams", g.teamIDs(), "connections", m.cfg.ConnectionsPerWorkspace)
		g.start(sockCtx)
	}
	m.setStates(apps)
	m.setSkipped(skipped)

	if fp := fingerprint(active); fp != m.lastSet || m.lastSet == 0 {
		m.lastSet = fp
		if m.cfg.OnWorkspaces != nil {
			m.cfg.OnWorkspaces(active)
		}
	}
}

// fingerprint identifies a workspace set and its tokens (never zero).
func fingerprint(ws []konstruct.Workspace) uint64 {
	keys := make([]string, 0, len(ws))
	for _, w := range ws {
		keys = append(keys, fmt.Sprint(w.TeamID, "\x00", w.TenantID, "\x00", w.BotUserID, "\x00", w.BotID, "\x00", w.AppToken, "\x00", w.BotToken))
	}
	slices.Sort(keys)
	h := fnv.New64a()
	for _, k := range keys {
		_, _ = h.Write([]byte(k))
		_, _ = h.Write([]byte{0xff})
	}
	return h.Sum64() | 1
}

// setSkipped keeps the workspaces skipped for a problem, logging each one
// when it is first skipped (or its problem changed) and when it is served
// again.
func (m *Manager) setSkipped(skipped []SocketState) {
	m.statesMu.Lock()
	old := m.skipped
	m.skipped = skipped
	m.statesMu.Unlock()
	before := map[string]string{}
	for _, s := range old {
		before[s.TeamID] = s.LastError
	}
	for _, s := range skipped {
		if prev, ok := before[s.TeamID]; !ok || prev != s.LastError {
			m.log.Error("workspace skipped: its tokens cannot be used; the other workspaces are served",
				"team_id", s.TeamID, "problem", s.LastError)
		}
		delete(before, s.TeamID)
	}
	for team := range before {
		m.log.Info("workspace no longer skipped", "team_id", team)
	}
}

func (m *Manager) setStates(apps map[string]*appGroup) {
	list := make([]*appGroup, 0, len(apps))
	for _, g := range apps {
		list = append(list, g)
	}
	m.statesMu.Lock()
	m.groups = list
	m.statesMu.Unlock()
}

// appsUp reports, per app token, whether one of its sockets is up here
// (ready), and whether its sockets still run here (running: up, connecting
// or closing).
func (m *Manager) appsUp() (ready, running map[string]bool) {
	m.statesMu.Lock()
	m.closing = slices.DeleteFunc(m.closing, (*appGroup).stopped)
	groups := append(slices.Clone(m.closing), m.groups...)
	m.statesMu.Unlock()
	ready, running = map[string]bool{}, map[string]bool{}
	for _, g := range groups {
		running[g.token] = !g.stopped()
		for _, s := range g.slots {
			if s.connected.Load() {
				ready[g.token] = true
				running[g.token] = true
				break
			}
		}
	}
	return ready, running
}

// States reports, per workspace, how many of its sockets are connected,
// and the workspaces skipped for a problem.
func (m *Manager) States() []SocketState {
	m.statesMu.Lock()
	groups := m.groups
	out := slices.Clone(m.skipped)
	m.statesMu.Unlock()
	for _, g := range groups {
		out = append(out, g.states()...)
	}
	slices.SortFunc(out, func(a, b SocketState) int { return cmp.Compare(a.TeamID, b.TeamID) })
	return out
}
