package bot

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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
	// QueueSize bounds the hand-off queue to the router (default 8192: a few
	// seconds of a burst). Room is reserved before an envelope is acked;
	// without room it stays unacked and Slack redelivers it.
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
	// Normalizers is how many goroutines decode handed-off envelopes into
	// messages for Events (default GOMAXPROCS, at least 2).
	Normalizers int
	Logger      *slog.Logger
	Metrics     *metrics.Metrics
	HTTPClient  *http.Client
}

// SocketState is the state of one workspace's sockets, for /readyz.
type SocketState struct {
	TeamID      string `json:"team_id"`
	AppID       string `json:"app_id,omitempty"`
	Connections int    `json:"connections"`
	Connected   int    `json:"connected"`
	Revoked     bool   `json:"revoked,omitempty"`
	LastError   string `json:"last_error,omitempty"`
}

// Manager keeps the Socket Mode connections of every active workspace open,
// acks each envelope as soon as it is read (after reserving its room in the
// hand-off queue), and hands the messages, normalized off the read loop by a
// small pool, to the router through a bounded queue (Events). Sockets belong
// to app-level tokens: workspaces sharing one app share its connections.
//
// Shutdown: when Run's context ends the manager stops reading its sockets
// (unread envelopes stay unacked, so Slack hands them to another connection
// or daemon), lets the acks already written flush, closes the sockets, lets
// the normalizers put every envelope handed off into Events, and then
// closes the Events channel. The router drains
// everything queued before the close: an acked message is always routed.
type Manager struct {
	cfg    ManagerConfig
	log    *slog.Logger
	events chan konstruct.Message

	// raw carries acked envelopes from the read loops to the normalizers.
	// pending counts the envelopes reserved and not yet in events (or
	// dropped by normalize): pending+len(events) never exceeds QueueSize,
	// so neither raw nor events ever blocks a send.
	raw     chan rawEnvelope
	pending atomic.Int64

	trigger chan struct{}
	running atomic.Bool // Run was called

	wg sync.WaitGroup // every slot and session reader

	statesMu sync.Mutex
	groups   []*appGroup // for States

	lastSet uint64 // fingerprint of the set given to OnWorkspaces

	// dropAck, in tests, makes the read loop skip the ack of an envelope
	// (as if it were lost), after handing the message off.
	dropAck func(envelopeID string) bool
	// onSession, in tests, observes socket life: "hello" when a socket of
	// slot conn (its gen-th connect) is up, "closed" when its reader ended.
	onSession func(conn, gen int, event string)
	// beforeNormalize, in tests, runs in a normalizer before each envelope.
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
	return &Manager{
		cfg:     cfg,
		log:     log.With("component", "gateway"),
		events:  make(chan konstruct.Message, cfg.QueueSize),
		raw:     make(chan rawEnvelope, cfg.QueueSize),
		trigger: make(chan struct{}, 1),
	}
}

// Events is the hand-off queue the router reads. Run closes it once it has
// stopped every socket and handed off every acked envelope.
func (m *Manager) Events() <-chan konstruct.Message { return m.events }

// Trigger asks for a reconcile now (wired to the store's LISTEN/NOTIFY).
func (m *Manager) Trigger() {
	select {
	case m.trigger <- struct{}{}:
	default:
	}
}

// errRunTwice is returned by a second Run.
var errRunTwice = errors.New("bot: Manager.Run called twice")

// Run reconciles the connections with Source until ctx ends, then stops
// every socket, closes Events and returns nil.
func (m *Manager) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errRunTwice
	}

	var norm sync.WaitGroup
	for range m.cfg.Normalizers {
		norm.Go(m.normalizeLoop)
	}

	apps := map[string]*appGroup{}
	ticker := time.NewTicker(m.cfg.ReconcileEvery)
	defer ticker.Stop()
	for {
		m.reconcile(ctx, apps)
		select {
		case <-ctx.Done():
			for _, g := range apps {
				g.stop()
			}
			m.wg.Wait()
			// Every reader has returned: what they handed off is in raw.
			close(m.raw)
			norm.Wait()
			close(m.events)
			m.setStates(nil)
			m.log.Info("gateway stopped")
			return nil
		case <-ticker.C:
		case <-m.trigger:
		}
	}
}

// reconcile makes the running apps match Source.
func (m *Manager) reconcile(ctx context.Context, apps map[string]*appGroup) {
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
	for _, w := range list {
		if w.Status != "" && w.Status != konstruct.WorkspaceActive {
			continue
		}
		active = append(active, w)
		if w.AppToken == "" {
			m.log.Warn("workspace without app token", "team_id", w.TeamID)
			continue
		}
		want[w.AppToken] = append(want[w.AppToken], w)
	}

	for tok, g := range apps {
		if _, ok := want[tok]; !ok {
			m.log.Info("disconnecting app", "app_id", g.appIDOr(), "teams", g.teamIDs())
			g.stop()
			delete(apps, tok)
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
		g.start(ctx)
	}
	m.setStates(apps)

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

func (m *Manager) setStates(apps map[string]*appGroup) {
	list := make([]*appGroup, 0, len(apps))
	for _, g := range apps {
		list = append(list, g)
	}
	m.statesMu.Lock()
	m.groups = list
	m.statesMu.Unlock()
}

// States reports, per workspace, how many of its sockets are connected.
func (m *Manager) States() []SocketState {
	m.statesMu.Lock()
	groups := m.groups
	m.statesMu.Unlock()
	var out []SocketState
	for _, g := range groups {
		out = append(out, g.states()...)
	}
	slices.SortFunc(out, func(a, b SocketState) int { return cmp.Compare(a.TeamID, b.TeamID) })
	return out
}

// rawEnvelope is an acked events_api envelope on its way to normalize.
type rawEnvelope struct {
	g          *appGroup
	buf        *[]byte // the frame, back to the pool once normalized
	payload    []byte  // within *buf
	retry      int
	receivedAt time.Time
}

// reserve takes room for one envelope in the hand-off, without waiting.
func (m *Manager) reserve() bool {
	for {
		p := m.pending.Load()
		if int(p)+len(m.events) >= cap(m.events) {
			return false
		}
		if m.pending.CompareAndSwap(p, p+1) {
			return true
		}
	}
}

// normalizeLoop decodes handed-off envelopes into Events until raw closes.
// Its sends never block for long: the room was reserved before the ack.
func (m *Manager) normalizeLoop() {
	for e := range m.raw {
		if m.beforeNormalize != nil {
			m.beforeNormalize()
		}
		msg, err := normalize(e.payload, e.receivedAt, e.g.botUser)
		putFrameBuf(e.buf)
		switch {
		case errors.Is(err, ErrNotMessage):
		case err != nil:
			m.log.Warn("malformed event acked and dropped", "app_id", e.g.appIDOr(), "error", errString(err))
		default:
			msg.RetryAttempt = e.retry
			m.events <- msg
			m.cfg.Metrics.QueueDepth(len(m.events))
		}
		m.pending.Add(-1)
	}
}
