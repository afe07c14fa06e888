package bot

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http"
	"slices"
	"sync"
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
	// seconds of a burst; beyond it envelopes stay unacked and Slack redelivers).
	QueueSize int
	// AckTimeout bounds an ack (default 1 s): slack-go's Ack can block while
	// a socket is down.
	AckTimeout time.Duration
	// PingInterval is how long a socket may go without a server PING before
	// it reconnects (slack-go's default 30 s).
	PingInterval time.Duration
	// RetryAfterFailure is how long an app whose connections fail for a
	// reason other than a refused token waits before the next try (default
	// 1 min); slack-go's own backoff covers ordinary network errors.
	RetryAfterFailure time.Duration
	Logger            *slog.Logger
	Metrics           *metrics.Metrics
	HTTPClient        *http.Client
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
// acks each envelope and hands the messages to the router through a bounded
// queue (Events). Sockets belong to app-level tokens: workspaces sharing one
// app share its connections.
//
// Shutdown: when Run's context ends (or Close is called) the manager stops
// reading its sockets (unread envelopes stay unacked, so Slack hands them to
// another connection or daemon), lets the acks already written flush, closes
// the sockets, and then closes the Events channel. The router drains
// everything queued before the close: an acked message is always routed.
type Manager struct {
	cfg    ManagerConfig
	log    *slog.Logger
	events chan konstruct.Message

	trigger chan struct{}
	closing chan struct{} // closed by Close
	done    chan struct{} // closed when Run returns
	stop    sync.Once     // closing
	evClose sync.Once     // events

	mu    sync.Mutex
	state int // 0 new, 1 running, 2 closed without Run

	wg sync.WaitGroup // every socket goroutine

	statesMu sync.Mutex
	groups   []*appGroup // for States

	lastSet uint64 // fingerprint of the set given to OnWorkspaces

	// dropAck, in tests, makes the read loop skip the ack of an envelope
	// (as if it were lost), after handing the message off.
	dropAck func(envelopeID string) bool
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
		trigger: make(chan struct{}, 1),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// Events is the hand-off queue the router reads. It is closed when Run has
// stopped every socket.
func (m *Manager) Events() <-chan konstruct.Message { return m.events }

// Trigger asks for a reconcile now (wired to the store's LISTEN/NOTIFY).
func (m *Manager) Trigger() {
	select {
	case m.trigger <- struct{}{}:
	default:
	}
}

// Close stops the manager as if Run's context ended and waits for Run to
// return. It is safe to call more than once, and without Run (Events is
// then closed at once).
func (m *Manager) Close() {
	m.stop.Do(func() { close(m.closing) })
	m.mu.Lock()
	st := m.state
	if st == 0 {
		m.state = 2
	}
	m.mu.Unlock()
	if st == 0 || st == 2 {
		m.evClose.Do(func() { close(m.events) })
		return
	}
	<-m.done
}

// errRunTwice is returned by a second Run.
var errRunTwice = errors.New("bot: Manager.Run called twice")

// Run reconciles the connections with Source until ctx ends or Close is
// called, then stops every socket, closes Events and returns nil.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	st := m.state
	if st == 0 {
		m.state = 1
	}
	m.mu.Unlock()
	switch st {
	case 1:
		return errRunTwice
	case 2:
		return nil
	}
	defer close(m.done)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-m.closing:
			cancel()
		case <-ctx.Done():
		}
	}()

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
			m.evClose.Do(func() { close(m.events) })
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
