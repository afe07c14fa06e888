package slacksim

import (
	"cmp"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// EnvelopeStat records one envelope's delivery: when it was first written to a
// socket, when it was acked, and how many times it was redelivered.
type EnvelopeStat struct {
	EnvelopeID string
	EventID    string
	AppID      string
	Sent       time.Time
	Acked      time.Time
	Retries    int
}

// app holds the sockets of one Slack app and the envelopes owed to it.
type app struct {
	s  *Server
	id string

	mu       sync.Mutex
	conns    []*wsConn
	rr       int
	pending  []*envelope // waiting for a socket
	inflight map[string]*envelope
	removed  bool
}

func newApp(s *Server, id string) *app {
	return &app{s: s, id: id, inflight: map[string]*envelope{}}
}

// envelope is one events_api or interactive delivery (or a raw frame from
// SendRaw).
type envelope struct {
	id      string
	typ     string // "" is events_api
	eventID string
	payload json.RawMessage
	raw     []byte // SendRaw: sent as is, never tracked
	retries int
	stat    *EnvelopeStat
	timer   *time.Timer
}

func (e *envelope) frame() []byte {
	if e.raw != nil {
		return e.raw
	}
	reason := ""
	if e.retries > 0 {
		reason = "timeout"
	}
	b, _ := json.Marshal(struct {
		EnvelopeID             string          `json:"envelope_id"`
		Payload                json.RawMessage `json:"payload"`
		Type                   string          `json:"type"`
		AcceptsResponsePayload bool            `json:"accepts_response_payload"`
		RetryAttempt           int             `json:"retry_attempt"`
		RetryReason            string          `json:"retry_reason"`
	}{e.id, e.payload, cmp.Or(e.typ, "events_api"), false, e.retries, reason})
	return b
}

type outFrame struct {
	data       []byte
	closeAfter time.Duration // > 0: close the socket this long after writing
	closeNow   bool
}

// wsConn is one Socket Mode connection: a reader goroutine for acks and a
// single writer goroutine fed by a buffered channel (gorilla allows one writer).
type wsConn struct {
	id       int64
	app      *app
	ws       *websocket.Conn
	send     chan outFrame
	done     chan struct{}
	once     sync.Once
	draining atomic.Bool // a disconnect was sent: route no more envelopes here
}

func (c *wsConn) shutdown() {
	c.once.Do(func() {
		c.app.remove(c)
		close(c.done)
		_ = c.ws.Close()
	})
}

// enqueue hands a frame to the writer; false if the socket is gone.
func (c *wsConn) enqueue(f outFrame) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	select {
	case c.send <- f:
		return true
	case <-c.done:
		return false
	}
}

func (a *app) remove(c *wsConn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, x := range a.conns {
		if x == c {
			a.conns = append(a.conns[:i], a.conns[i+1:]...)
			return
		}
	}
}

func (a *app) closeAll() []*wsConn {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.inflight {
		if e.timer != nil {
			e.timer.Stop()
		}
	}
	return append([]*wsConn(nil), a.conns...)
}

// pickLocked chooses the next live socket round-robin. Caller holds a.mu.
func (a *app) pickLocked() *wsConn {
	n := len(a.conns)
	for i := 0; i < n; i++ {
		c := a.conns[(a.rr+i)%n]
		if !c.draining.Load() {
			a.rr = (a.rr + i + 1) % n
			return c
		}
	}
	return nil
}

// deliver sends an envelope to one socket of the app, or queues it until one connects.
func (a *app) deliver(e *envelope) {
	for {
		a.mu.Lock()
		c := a.pickLocked()
		if c == nil {
			a.pending = append(a.pending, e)
			a.mu.Unlock()
			return
		}
		if e.raw == nil {
			a.inflight[e.id] = e
			if e.timer != nil {
				e.timer.Stop()
			}
			e.timer = time.AfterFunc(a.s.ackTimeout, func() { a.timeout(e) })
		}
		frame := e.frame()
		a.mu.Unlock()
		if e.stat != nil {
			a.s.statsMu.Lock()
			if e.stat.Sent.IsZero() {
				e.stat.Sent = time.Now()
			}
			a.s.statsMu.Unlock()
		}
		if c.enqueue(outFrame{data: frame}) {
			return
		}
		// The socket died between pick and write: try another one now.
	}
}

// timeout redelivers an unacked envelope, like Slack, up to maxRetries times.
func (a *app) timeout(e *envelope) {
	if a.s.isClosed() {
		return
	}
	a.mu.Lock()
	if _, ok := a.inflight[e.id]; !ok {
		a.mu.Unlock()
		return
	}
	delete(a.inflight, e.id)
	if e.retries >= maxRetries {
		a.mu.Unlock()
		a.s.log.Warn("slacksim envelope never acked", "envelope_id", e.id, "app_id", a.id)
		return
	}
	e.retries++
	a.mu.Unlock()
	a.s.statsMu.Lock()
	e.stat.Retries = e.retries
	a.s.statsMu.Unlock()
	a.deliver(e)
}

// ack marks an envelope acked; it reports false for unknown ids.
func (a *app) ack(id string) (EnvelopeStat, bool) {
	a.mu.Lock()
	e, ok := a.inflight[id]
	if ok {
		delete(a.inflight, id)
		if e.timer != nil {
			e.timer.Stop()
		}
	}
	a.mu.Unlock()
	if !ok {
		return EnvelopeStat{}, false
	}
	a.s.unacked.Add(-1)
	a.s.statsMu.Lock()
	e.stat.Acked = time.Now()
	st := *e.stat
	a.s.statsMu.Unlock()
	return st, true
}

// handleLink upgrades a ticketed request into a Socket Mode connection.
func (s *Server) handleLink(w http.ResponseWriter, r *http.Request) {
	tk := r.URL.Query().Get("ticket")
	s.mu.Lock()
	t, ok := s.tickets[tk]
	delete(s.tickets, tk) // single use
	var a *app
	if ok && time.Now().Before(t.expires) {
		a = s.apps[t.appID]
	}
	s.mu.Unlock()
	if a == nil {
		http.Error(w, "invalid or used ticket", http.StatusUnauthorized)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader already answered
	}
	c := &wsConn{
		id:   s.connSeq.Add(1),
		app:  a,
		ws:   ws,
		send: make(chan outFrame, 256),
		done: make(chan struct{}),
	}
	a.mu.Lock()
	if len(a.conns) >= maxConnsPerApp || a.removed {
		a.mu.Unlock()
		reason := "too_many_websockets"
		if a.removed {
			reason = "link_disabled"
		}
		_ = ws.SetWriteDeadline(time.Now().Add(time.Second))
		_ = ws.WriteMessage(websocket.TextMessage, disconnectFrame(reason))
		_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, reason))
		_ = ws.Close()
		return
	}
	// hello goes into the empty buffer before the socket is visible to
	// deliver, so it is always the first frame.
	n := len(a.conns) + 1
	hello, _ := json.Marshal(map[string]any{
		"type":            "hello",
		"num_connections": n,
		"debug_info": map[string]any{
			"host":                        "applink-" + randHex(4),
			"build_number":                118,
			"approximate_connection_time": 18060,
		},
		"connection_info": map[string]any{"app_id": a.id},
	})
	c.send <- outFrame{data: hello}
	a.conns = append(a.conns, c)
	a.mu.Unlock()

	ok1 := s.goTracked(func() { s.writeLoop(c) })
	ok2 := ok1 && s.goTracked(func() { s.readLoop(c) })
	if !ok1 || !ok2 {
		c.shutdown()
		return
	}
	s.log.Debug("slacksim socket connected", "app_id", a.id, "conn", c.id, "num_connections", n)

	// Hand queued envelopes to the live sockets.
	a.mu.Lock()
	pending := a.pending
	a.pending = nil
	a.mu.Unlock()
	for _, e := range pending {
		a.deliver(e)
	}
}

func disconnectFrame(reason string) []byte {
	b, _ := json.Marshal(map[string]any{
		"type":       "disconnect",
		"reason":     reason,
		"debug_info": map[string]any{"host": "applink-" + randHex(4)},
	})
	return b
}

func (s *Server) writeLoop(c *wsConn) {
	defer c.shutdown()
	ping := time.NewTicker(s.pingInterval)
	defer ping.Stop()
	var closeC <-chan time.Time
	for {
		select {
		case <-c.done:
			return
		case <-closeC:
			_ = c.ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			return
		case f := <-c.send:
			if f.closeNow {
				return
			}
			_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := c.ws.WriteMessage(websocket.TextMessage, f.data); err != nil {
				return
			}
			if f.closeAfter > 0 && closeC == nil {
				t := time.NewTimer(f.closeAfter)
				defer t.Stop()
				closeC = t.C
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, []byte(randHex(4)), time.Now().Add(5*time.Second)); err != nil {
				return
			}
		}
	}
}

func (s *Server) readLoop(c *wsConn) {
	defer c.shutdown()
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		if len(data) >= maxAckBytes {
			s.log.Warn("slacksim refused oversized socket response", "app_id", c.app.id, "bytes", len(data))
			continue
		}
		var resp struct {
			EnvelopeID string          `json:"envelope_id"`
			Payload    json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(data, &resp); err != nil || resp.EnvelopeID == "" {
			s.log.Warn("slacksim unreadable socket response", "app_id", c.app.id, "err", err)
			continue
		}
		st, ok := c.app.ack(resp.EnvelopeID)
		if !ok {
			continue
		}
		s.mu.Lock()
		hooks := s.onAck
		s.mu.Unlock()
		for _, h := range hooks {
			h(st)
		}
	}
}

func (s *Server) appByID(appID string) *app {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apps[appID]
}

// appConns returns a copy of the app's sockets, none for an unknown app.
func (s *Server) appConns(appID string) []*wsConn {
	a := s.appByID(appID)
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*wsConn(nil), a.conns...)
}

// Connections returns how many sockets the app has open.
func (s *Server) Connections(appID string) int {
	a := s.appByID(appID)
	if a == nil {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.conns)
}

// Disconnect sends {"type":"disconnect","reason":reason} to every socket of
// the app and returns how many got it. With "warning" the sockets stay open
// (Slack closes them ~10 s later: use DropConnections); with any other reason
// the server closes them after the disconnect grace (2 s) if the client has not.
func (s *Server) Disconnect(appID, reason string) int {
	n := 0
	for _, c := range s.appConns(appID) {
		f := outFrame{data: disconnectFrame(reason)}
		if reason != "warning" {
			c.draining.Store(true)
			f.closeAfter = s.graceClose
		}
		if c.enqueue(f) {
			n++
		}
	}
	return n
}

// DropConnections closes every socket of the app abruptly, without a frame.
func (s *Server) DropConnections(appID string) int {
	conns := s.appConns(appID)
	for _, c := range conns {
		c.shutdown()
	}
	return len(conns)
}

// SendRaw delivers an arbitrary frame to one socket of the app (queued if none
// is connected). It is not tracked for acks; use it for malformed input.
func (s *Server) SendRaw(appID string, payload []byte) {
	a := s.appByID(appID)
	if a == nil {
		return
	}
	a.deliver(&envelope{raw: append([]byte(nil), payload...)})
}

// Envelopes returns the delivery record of every envelope sent so far.
func (s *Server) Envelopes() []EnvelopeStat {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	out := make([]EnvelopeStat, len(s.stats))
	for i, st := range s.stats {
		out[i] = *st
	}
	return out
}

// Unacked counts envelopes not acked yet (queued, in flight, or given up on).
func (s *Server) Unacked() int {
	return int(s.unacked.Load())
}

// emit wraps an inner event in an event_callback and delivers it to the
// workspace's app. Call it without holding s.mu.
func (s *Server) emit(spec WorkspaceSpec, verif string, ev map[string]any) {
	eventID := newID("Ev", 9)
	now := time.Now()
	payload, _ := json.Marshal(map[string]any{
		"token":                 verif,
		"team_id":               spec.TeamID,
		"enterprise_id":         spec.EnterpriseID,
		"context_team_id":       spec.TeamID,
		"context_enterprise_id": nil,
		"api_app_id":            spec.AppID,
		"event":                 ev,
		"type":                  "event_callback",
		"event_id":              eventID,
		"event_time":            now.Unix(),
		"authorizations": []map[string]any{{
			"enterprise_id":         nilIfEmpty(spec.EnterpriseID),
			"team_id":               spec.TeamID,
			"user_id":               spec.BotUserID,
			"is_bot":                true,
			"is_enterprise_install": false,
		}},
		"is_ext_shared_channel": false,
		"event_context":         "4-" + randHex(40),
	})
	a := s.appByID(spec.AppID)
	if a == nil {
		return
	}
	st := &EnvelopeStat{EnvelopeID: newUUID(), EventID: eventID, AppID: spec.AppID}
	s.statsMu.Lock()
	s.stats = append(s.stats, st)
	s.statsMu.Unlock()
	s.unacked.Add(1)
	a.deliver(&envelope{id: st.EnvelopeID, eventID: eventID, payload: payload, stat: st})
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}
