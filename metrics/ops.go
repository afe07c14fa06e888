package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Ops holds what an operator's dashboard and alerts need beyond the data
// path's counters: the workspaces and sockets by state, whether Postgres
// and Redis answer, how long the oldest unfinished reply has been waiting,
// and the 👍/👎 feedback. The daemon samples the first three every few
// seconds (cmd/konstruct observe.go); deploy/grafana and deploy/prometheus
// read them.
type Ops struct {
	Feedback         *prometheus.CounterVec // by vote: up, down
	Workspaces       *prometheus.GaugeVec   // by socket_state
	Sockets          *prometheus.GaugeVec   // by state: connected, disconnected
	DependencyUp     *prometheus.GaugeVec   // by dependency: postgres, redis
	OldestWaitingAge prometheus.Gauge
}

// Socket states of a workspace in konstruct_workspaces.
const (
	SocketConnected    = "connected"    // every socket of its app is open
	SocketDegraded     = "degraded"     // some are open
	SocketDisconnected = "disconnected" // none is open: its events wait for another gateway, or are lost after Slack's retries
	SocketRevoked      = "revoked"      // Slack refused its token; `konstruct workspace add` again
)

// Feedback votes in konstruct_feedback_total.
const (
	VoteUp   = "up"
	VoteDown = "down"
)

// Dependencies in konstruct_dependency_up.
const (
	DependencyPostgres = "postgres"
	DependencyRedis    = "redis"
)

func newOps(r prometheus.Registerer) Ops {
	o := Ops{
		Feedback: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "konstruct_feedback_total",
			Help: "👍 (up) and 👎 (down) clicks on answers."}, []string{"vote"}),
		Workspaces: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "konstruct_workspaces",
			Help: "Active workspaces this gateway serves, by the state of their Socket Mode connections: connected, degraded (some open), disconnected (none open), revoked."}, []string{"socket_state"}),
		Sockets: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "konstruct_sockets",
			Help: "Socket Mode connections this gateway wants, by state: connected or disconnected (connecting, backing off, paused or revoked)."}, []string{"state"}),
		DependencyUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "konstruct_dependency_up",
			Help: "1 when the dependency answered the daemon's last ping (every 5 s), else 0."}, []string{"dependency"}),
		OldestWaitingAge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "konstruct_reply_oldest_waiting_seconds",
			Help: "Age of the oldest reply task not finished (pending, running, retrying or deferred) since the router enqueued it: how long its placeholder has shown."}),
	}
	// Every known label value exists from the start: rate() and the alerts
	// see a zero rather than no series at all.
	for _, v := range []string{VoteUp, VoteDown} {
		o.Feedback.WithLabelValues(v)
	}
	for _, s := range []string{SocketConnected, SocketDegraded, SocketDisconnected, SocketRevoked} {
		o.Workspaces.WithLabelValues(s)
	}
	for _, s := range []string{SocketConnected, SocketDisconnected} {
		o.Sockets.WithLabelValues(s)
	}
	r.MustRegister(o.Feedback, o.Workspaces, o.Sockets, o.DependencyUp, o.OldestWaitingAge)
	return o
}

// Feedback counts a 👍 (up) or 👎 click on an answer.
func (m *Metrics) Feedback(up bool) {
	if m == nil {
		return
	}
	v := VoteDown
	if up {
		v = VoteUp
	}
	m.Ops.Feedback.WithLabelValues(v).Inc()
}

// WorkspaceSockets is one workspace's sockets as the gateway sees them.
// Workspaces of one app share its sockets: they carry the same AppID and
// their sockets are counted once.
type WorkspaceSockets struct {
	AppID       string
	Connections int // sockets wanted
	Connected   int // sockets open
	Revoked     bool
}

// State is the workspace's socket_state label.
func (w WorkspaceSockets) State() string {
	switch {
	case w.Revoked:
		return SocketRevoked
	case w.Connected == 0:
		return SocketDisconnected
	case w.Connected < w.Connections:
		return SocketDegraded
	}
	return SocketConnected
}

// SetSockets publishes the gateway's workspaces and sockets by state.
func (m *Metrics) SetSockets(ws []WorkspaceSockets) {
	if m == nil {
		return
	}
	byState := map[string]int{SocketConnected: 0, SocketDegraded: 0, SocketDisconnected: 0, SocketRevoked: 0}
	seen := map[string]bool{}
	connected, disconnected := 0, 0
	for _, w := range ws {
		byState[w.State()]++
		if w.AppID != "" {
			if seen[w.AppID] {
				continue
			}
			seen[w.AppID] = true
		}
		connected += w.Connected
		disconnected += max(w.Connections-w.Connected, 0)
	}
	for s, n := range byState {
		m.Ops.Workspaces.WithLabelValues(s).Set(float64(n))
	}
	m.Ops.Sockets.WithLabelValues(SocketConnected).Set(float64(connected))
	m.Ops.Sockets.WithLabelValues(SocketDisconnected).Set(float64(disconnected))
}

// DependencyUp records whether a dependency (DependencyPostgres,
// DependencyRedis) answered.
func (m *Metrics) DependencyUp(name string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.Ops.DependencyUp.WithLabelValues(name).Set(v)
}

// OldestWaiting records the age of the oldest unfinished reply (0: none).
func (m *Metrics) OldestWaiting(d time.Duration) {
	if m != nil {
		m.Ops.OldestWaitingAge.Set(max(d, 0).Seconds())
	}
}
