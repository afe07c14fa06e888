package bot

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/metrics"
	"github.com/konstruct/konstruct/slacksim"
)

// warning and refresh_requested: the replacement socket says hello before
// the old one closes, the app never has fewer sockets than it wants, and no
// envelope is lost.
func TestManagerMakeBeforeBreak(t *testing.T) {
	t.Parallel()
	for _, reason := range []string{"refresh_requested", "warning"} {
		t.Run(reason, func(t *testing.T) {
			t.Parallel()
			sim, ws, src := oneWorkspace(t, slacksim.WithAckTimeout(time.Second), slacksim.WithDisconnectGrace(5*time.Second))
			mx := metrics.New()
			log := &sessionLog{}
			m := startManagerWith(t, sim, ManagerConfig{Source: src.list, Metrics: mx},
				func(m *Manager) { m.onSession = log.hook })
			waitFor(t, 5*time.Second, "sockets", func() bool { return sim.Connections(ws.AppID) == 2 })
			opens := sim.Calls("apps.connections.open")

			// Watch the server side: the app must never drop below 2.
			stop := make(chan struct{})
			minConns := atomic.Int64{}
			minConns.Store(2)
			var watch sync.WaitGroup
			watch.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if n := int64(sim.Connections(ws.AppID)); n < minConns.Load() {
						minConns.Store(n)
					}
					time.Sleep(100 * time.Microsecond)
				}
			})

			var want []string
			for i := range 40 {
				if i == 10 {
					if n := sim.Disconnect(ws.AppID, reason); n != 2 {
						t.Fatalf("disconnect reached %d sockets", n)
					}
				}
				ts, err := sim.DM(ws.TeamID, ws.UserIDs[0], fmt.Sprintf("msg %d", i), "")
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, ts)
				time.Sleep(5 * time.Millisecond)
			}
			got := collect(t, m, 10*time.Second, want...)
			waitFor(t, 5*time.Second, "old sockets closed", func() bool {
				return log.index("0/1/closed") >= 0 && log.index("1/1/closed") >= 0
			})
			close(stop)
			watch.Wait()
			waitFor(t, 5*time.Second, "all acked", func() bool { return sim.Unacked() == 0 })

			for _, ts := range want {
				if len(got[ts]) == 0 {
					t.Errorf("%s lost", ts)
				}
			}
			for slot := range 2 {
				hello, closed := log.index(fmt.Sprintf("%d/2/hello", slot)), log.index(fmt.Sprintf("%d/1/closed", slot))
				if hello < 0 || closed < 0 || hello > closed {
					t.Errorf("slot %d: new hello at %d, old closed at %d: %v", slot, hello, closed, log.snapshot())
				}
			}
			if n := minConns.Load(); n < 2 {
				t.Errorf("the app went down to %d sockets during the refresh", n)
			}
			if n := sim.Calls("apps.connections.open") - opens; n != 2 {
				t.Errorf("%d apps.connections.open calls for the refresh, want 2", n)
			}
			// Counted just after the old socket closed.
			waitFor(t, 3*time.Second, "2 reconnects counted", func() bool { return value(mx.Reconnects) == 2 })
			if reason == "refresh_requested" {
				// Slack routes nothing to a socket it asked to refresh:
				// nothing had to be redelivered.
				for _, st := range sim.Envelopes() {
					if st.Retries != 0 {
						t.Errorf("envelope %s redelivered", st.EnvelopeID)
					}
				}
			}
			if st := m.States(); len(st) != 1 || st[0].Connected != 2 {
				t.Errorf("States = %+v", st)
			}
			if n := value(mx.SocketsConnected); n != 2 {
				t.Errorf("sockets gauge %v", n)
			}
		})
	}
}

// A socket that hears no PING (nor any frame) for twice the ping interval
// is replaced; one that is pinged stays.
func TestManagerPingTimeoutReconnects(t *testing.T) {
	t.Parallel()
	t.Run("silent server", func(t *testing.T) {
		t.Parallel()
		sim, ws, src := oneWorkspace(t, slacksim.WithPingInterval(time.Hour))
		mx := metrics.New()
		m := startManager(t, sim, ManagerConfig{Source: src.list, Metrics: mx, PingInterval: 100 * time.Millisecond, ConnectionsPerWorkspace: 1})
		waitFor(t, 5*time.Second, "reconnects", func() bool { return value(mx.Reconnects) >= 2 })
		ts, _ := sim.DM(ws.TeamID, ws.UserIDs[0], "still reachable", "")
		collect(t, m, 5*time.Second, ts)
	})
	t.Run("pinging server", func(t *testing.T) {
		t.Parallel()
		sim, ws, src := oneWorkspace(t, slacksim.WithPingInterval(40*time.Millisecond))
		mx := metrics.New()
		startManager(t, sim, ManagerConfig{Source: src.list, Metrics: mx, PingInterval: 100 * time.Millisecond, ConnectionsPerWorkspace: 1})
		waitFor(t, 5*time.Second, "socket", func() bool { return sim.Connections(ws.AppID) == 1 })
		time.Sleep(time.Second)
		if n := value(mx.Reconnects); n != 0 {
			t.Errorf("%v reconnects with pings every 40ms", n)
		}
	})
}

// An abrupt close is repaired quickly (backoff starts at 100 ms), every
// time, with a fresh URL, and delivery goes on.
func TestManagerReconnectsAfterDrop(t *testing.T) {
	t.Parallel()
	sim, ws, src := oneWorkspace(t, slacksim.WithAckTimeout(time.Second))
	mx := metrics.New()
	m := startManager(t, sim, ManagerConfig{Source: src.list, Metrics: mx})
	waitFor(t, 5*time.Second, "sockets", func() bool { return sim.Connections(ws.AppID) == 2 })
	for round := range 3 {
		opens := sim.Calls("apps.connections.open")
		start := time.Now()
		if n := sim.DropConnections(ws.AppID); n != 2 {
			t.Fatalf("round %d: dropped %d", round, n)
		}
		waitFor(t, 3*time.Second, "sockets back", func() bool {
			return sim.Connections(ws.AppID) == 2 && len(m.States()) == 1 && m.States()[0].Connected == 2
		})
		t.Logf("round %d: reconnected in %v", round, time.Since(start).Round(time.Millisecond))
		if n := sim.Calls("apps.connections.open") - opens; n != 2 {
			t.Errorf("round %d: %d apps.connections.open calls, want 2 (one fresh URL per socket)", round, n)
		}
		ts, _ := sim.DM(ws.TeamID, ws.UserIDs[0], "after the drop", "")
		collect(t, m, 5*time.Second, ts)
	}
	// A reconnect is counted just after its socket goes live.
	waitFor(t, 3*time.Second, "6 reconnects counted", func() bool { return value(mx.Reconnects) == 6 })
}

// Two managers on one app ask for more sockets than Slack allows (10): the
// surplus is refused with too_many_websockets and backs off instead of
// hammering apps.connections.open.
func TestManagerTooManyWebsocketsBacksOff(t *testing.T) {
	t.Parallel()
	sim, ws, src := oneWorkspace(t)
	a := startManager(t, sim, ManagerConfig{Source: src.list, ConnectionsPerWorkspace: 6})
	startManager(t, sim, ManagerConfig{Source: src.list, ConnectionsPerWorkspace: 6})
	waitFor(t, 5*time.Second, "10 sockets", func() bool { return sim.Connections(ws.AppID) == 10 })
	opens := sim.Calls("apps.connections.open")
	time.Sleep(time.Second)
	// 2 refused slots, backoff 100 ms doubling: a handful of tries each.
	if n := sim.Calls("apps.connections.open") - opens; n > 20 {
		t.Errorf("%d apps.connections.open calls in 1 s: no backoff", n)
	}
	if st := a.States(); len(st) != 1 || st[0].Connected < 4 {
		t.Errorf("States = %+v", st)
	}
}

// Socket Mode turned off for an app whose token stays good: Slack says
// link_disabled on the live socket, then instead of hello. The app is
// paused for RetryAfterFailure (reported, not revoked, not retried in a
// loop) and reconnects by itself once Socket Mode is back. (slacksim's
// link_disabled comes with a revoked token: the revoke path.)
func TestManagerLinkDisabledPausesApp(t *testing.T) {
	t.Parallel()
	link := newFakeLink(t)
	src := &source{}
	src.set(konstruct.Workspace{TeamID: "T0LINK", AppToken: "xapp-link", BotToken: "xoxb-link", Status: konstruct.WorkspaceActive})
	var revoked atomic.Int64
	m := runManager(t, ManagerConfig{APIURL: link.srv.URL + "/api/", Source: src.list, ConnectionsPerWorkspace: 1,
		RetryAfterFailure: time.Second, OnRevoked: func(context.Context, string) { revoked.Add(1) }}, nil)
	state := func() SocketState {
		if st := m.States(); len(st) == 1 {
			return st[0]
		}
		return SocketState{}
	}
	waitFor(t, 5*time.Second, "socket up", func() bool { return state().Connected == 1 })
	if st := state(); st.AppID != "A0LINK" {
		t.Errorf("app id %q, want the hello's", st.AppID)
	}

	link.disabled.Store(true)
	link.disconnect("link_disabled")
	waitFor(t, 5*time.Second, "paused", func() bool {
		st := state()
		return st.Connected == 0 && strings.Contains(st.LastError, "link_disabled")
	})
	pausedAt := time.Now()
	opens := link.opens.Load()
	time.Sleep(300 * time.Millisecond)
	if n := link.opens.Load() - opens; n != 0 {
		t.Errorf("%d apps.connections.open calls during the pause", n)
	}

	link.disabled.Store(false)
	waitFor(t, 5*time.Second, "reconnect after the pause", func() bool { return state().Connected == 1 })
	if d := time.Since(pausedAt); d < 600*time.Millisecond {
		t.Errorf("reconnected %v after the pause began, want about RetryAfterFailure (1s)", d)
	}
	if st := state(); st.Revoked || revoked.Load() != 0 {
		t.Errorf("revoked: %+v, OnRevoked %d times", st, revoked.Load())
	}
}

// fakeLink is a Socket Mode endpoint whose app can have Socket Mode turned
// off: apps.connections.open still answers, but a new socket gets a
// link_disabled disconnect instead of hello.
type fakeLink struct {
	srv      *httptest.Server
	disabled atomic.Bool
	opens    atomic.Int64

	mu    sync.Mutex
	conns map[*websocket.Conn]bool // sockets past hello
}

func newFakeLink(t *testing.T) *fakeLink {
	t.Helper()
	f := &fakeLink{conns: map[*websocket.Conn]bool{}}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/apps.connections.open", func(w http.ResponseWriter, r *http.Request) {
		f.opens.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"ok":true,"url":"ws://%s/link"}`, r.Host)
	})
	mux.HandleFunc("/link", func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		if f.disabled.Load() {
			_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"disconnect","reason":"link_disabled"}`))
			return
		}
		f.mu.Lock()
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"hello","num_connections":1,"connection_info":{"app_id":"A0LINK"}}`))
		f.conns[ws] = true
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			delete(f.conns, ws)
			f.mu.Unlock()
		}()
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// disconnect sends a disconnect frame to every socket past hello.
func (f *fakeLink) disconnect(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ws := range f.conns {
		_ = ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"disconnect","reason":%q}`, reason))
	}
}
