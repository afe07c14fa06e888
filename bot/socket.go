package bot

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/slack-go/slack"

	"github.com/konstruct/konstruct"
)

const (
	// ackFlush bounds how long a closing socket waits for Slack's answer to
	// its close frame (which tells every ack written before it was read).
	ackFlush = 150 * time.Millisecond
	// helloTimeout bounds the wait for the first frame of a new socket.
	helloTimeout = 10 * time.Second
	// handshakeTimeout bounds the websocket upgrade.
	handshakeTimeout = 10 * time.Second
	// readLimit is the largest frame accepted (Slack's are a few KiB).
	readLimit = 8 << 20
	// backoffMin and backoffMax bound the reconnect backoff (jittered,
	// doubling per failed attempt).
	backoffMin = 100 * time.Millisecond
	backoffMax = 30 * time.Second
	// stableAfter is how long a socket must have lived for its loss to
	// restart the backoff from backoffMin.
	stableAfter = 10 * time.Second
)

// appGroup is the set of sockets of one app-level token, shared by every
// workspace the app is installed in.
type appGroup struct {
	m      *Manager
	token  string
	api    *slack.Client // apps.connections.open only
	conns  []*socketConn
	cancel context.CancelFunc

	mu            sync.Mutex
	teams         map[string]konstruct.Workspace
	appID         string // from hello, else from the workspaces
	revoked       bool
	lastErr       string
	disabledUntil time.Time // link_disabled: no socket before then

	revokeOnce sync.Once
	logMu      sync.Mutex
	lastFull   time.Time // last "queue full" log line
}

// socketConn is one connection slot of an app. During a make-before-break
// refresh it briefly holds two websockets: the old one keeps reading (and
// acking) until the new one said hello.
type socketConn struct {
	id int

	mu        sync.Mutex
	live      int // sessions that said hello and still read
	connected atomic.Bool
}

func newAppGroup(m *Manager, token string, ws []konstruct.Workspace) *appGroup {
	g := &appGroup{m: m, token: token}
	g.api = slack.New("",
		slack.OptionAppLevelToken(token),
		slack.OptionAPIURL(m.cfg.APIURL),
		slack.OptionHTTPClient(m.cfg.HTTPClient))
	for i := range m.cfg.ConnectionsPerWorkspace {
		g.conns = append(g.conns, &socketConn{id: i})
	}
	g.setTeams(ws)
	return g
}

func (g *appGroup) setTeams(ws []konstruct.Workspace) {
	teams := make(map[string]konstruct.Workspace, len(ws))
	for _, w := range ws {
		teams[w.TeamID] = w
	}
	g.mu.Lock()
	g.teams = teams
	if g.appID == "" {
		for _, w := range ws {
			if w.AppID != "" {
				g.appID = w.AppID
				break
			}
		}
	}
	g.mu.Unlock()
}

func (g *appGroup) teamIDs() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	ids := make([]string, 0, len(g.teams))
	for id := range g.teams {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (g *appGroup) appIDOr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.appID
}

func (g *appGroup) botUser(teamID string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.teams[teamID].BotUserID
}

func (g *appGroup) setErr(err error) {
	if err == nil {
		return
	}
	g.mu.Lock()
	g.lastErr = konstruct.Redact(err.Error())
	g.mu.Unlock()
}

func (g *appGroup) states() []SocketState {
	connected := 0
	for _, c := range g.conns {
		if c.connected.Load() {
			connected++
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]SocketState, 0, len(g.teams))
	for id, w := range g.teams {
		out = append(out, SocketState{
			TeamID:      id,
			AppID:       cmp.Or(g.appID, w.AppID),
			Connections: len(g.conns),
			Connected:   connected,
			Revoked:     g.revoked,
			LastError:   g.lastErr,
		})
	}
	return out
}

// start runs every socket of the app until stop or ctx ends.
func (g *appGroup) start(ctx context.Context) {
	ctx, g.cancel = context.WithCancel(ctx)
	for _, c := range g.conns {
		g.m.wg.Go(func() { g.runConn(ctx, c) })
	}
}

// stop asks the sockets to close; Manager.Run waits for them.
func (g *appGroup) stop() {
	if g.cancel != nil {
		g.cancel()
	}
}

// sessionLive adds delta to the slot's live sessions and keeps the
// connected gauge in step.
func (g *appGroup) sessionLive(c *socketConn, delta int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live += delta
	on := c.live > 0
	if c.connected.CompareAndSwap(!on, on) {
		if on {
			g.m.cfg.Metrics.SocketConnected(1)
		} else {
			g.m.cfg.Metrics.SocketConnected(-1)
		}
	}
}

// errDisconnected is a disconnect frame received instead of hello.
type errDisconnected struct{ reason string }

func (e errDisconnected) Error() string { return "socket mode disconnect: " + e.reason }

// runConn keeps one socket slot connected until ctx ends or Slack refuses
// the token. Every (re)connect asks apps.connections.open for a fresh,
// single-use URL. A disconnect frame with reason warning or
// refresh_requested opens the replacement first and closes the old socket
// only once the new one said hello (make-before-break); a lost socket is
// replaced after a jittered backoff (100 ms doubling to 30 s).
func (g *appGroup) runConn(ctx context.Context, c *socketConn) {
	var cur, old *session
	defer func() { closeSessions(cur, old) }()
	log := g.m.log.With("app_id", g.appIDOr(), "conn", c.id)
	attempt := 0
	gen := 0
	everUp := false

	// wait sleeps d unless ctx ends first (false); a replaced socket that
	// dies meanwhile is cleaned up.
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		for {
			var oldDone <-chan struct{}
			if old != nil {
				oldDone = old.done
			}
			select {
			case <-ctx.Done():
				return false
			case <-t.C:
				return true
			case <-oldDone:
				old.close()
				old = nil
			}
		}
	}

	for ctx.Err() == nil {
		if until := g.pausedUntil(); !until.IsZero() {
			if !wait(time.Until(until)) {
				return
			}
			continue
		}
		gen++
		s, err := g.connect(ctx, c, gen)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var disc errDisconnected
			var rl *slack.RateLimitedError
			d := backoff(attempt)
			attempt++
			switch {
			case IsAuthError(err):
				g.revoke(ctx, err)
				return
			case errors.As(err, &disc) && disc.reason == "link_disabled":
				g.disable(log)
				continue
			case errors.As(err, &rl):
				d = max(d, rl.RetryAfter)
			}
			g.setErr(err)
			log.Warn("socket mode connect failed; retrying", "error", errString(err), "retry_in", d.Round(time.Millisecond))
			if !wait(d) {
				return
			}
			continue
		}
		if old != nil {
			// The replacement said hello: now the old socket may go.
			old.close()
			old = nil
		}
		if everUp {
			g.m.cfg.Metrics.Reconnect()
		}
		everUp = true
		cur = s
		helloAt := time.Now()

		for cur != nil {
			var oldDone <-chan struct{}
			if old != nil {
				oldDone = old.done
			}
			select {
			case <-ctx.Done():
				return
			case <-oldDone:
				old.close()
				old = nil
			case reason := <-cur.disconnect:
				switch reason {
				case "link_disabled":
					// Socket Mode turned off, or the token revoked: the
					// next apps.connections.open tells which (revoke, or a
					// link_disabled hello that pauses the app).
					cur.close()
					cur = nil
					var d time.Duration
					if attempt > 0 {
						d = backoff(attempt)
					}
					attempt++
					log.Warn("slack disabled the socket (link_disabled); checking the app", "retry_in", d.Round(time.Millisecond))
					if d > 0 && !wait(d) {
						return
					}
				case "too_many_websockets":
					cur.close()
					cur = nil
					d := backoff(attempt)
					attempt++
					log.Warn("too many websockets for the app; backing off", "retry_in", d.Round(time.Millisecond))
					if !wait(d) {
						return
					}
				default: // warning, refresh_requested, or a reason we don't know
					log.Debug("socket mode disconnect; replacing the socket first", "reason", reason)
					if old != nil {
						old.close()
					}
					old, cur = cur, nil
				}
			case <-cur.done:
				err := cur.readErr()
				cur.close()
				cur = nil
				if time.Since(helloAt) >= stableAfter {
					attempt = 0
				}
				d := backoff(attempt)
				attempt++
				log.Info("socket lost; reconnecting", "error", errString(err), "retry_in", d.Round(time.Millisecond))
				if !wait(d) {
					return
				}
			}
		}
		if old == nil && time.Since(helloAt) >= stableAfter {
			attempt = 0
		}
	}
}

// pausedUntil is the end of a link_disabled pause, zero when not paused.
func (g *appGroup) pausedUntil() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Now().Before(g.disabledUntil) {
		return g.disabledUntil
	}
	return time.Time{}
}

// disable pauses every socket of the app for RetryAfterFailure after Slack
// said link_disabled (Socket Mode turned off for the app): the workspaces
// are reported unavailable in States, not revoked, so turning Socket Mode
// back on needs no new `workspace add`.
func (g *appGroup) disable(log *slog.Logger) {
	g.mu.Lock()
	first := !time.Now().Before(g.disabledUntil)
	g.disabledUntil = time.Now().Add(g.m.cfg.RetryAfterFailure)
	g.lastErr = "link_disabled: Socket Mode is disabled for this app"
	g.mu.Unlock()
	if first {
		log.Error("slack refused socket mode for the app (link_disabled); its workspaces are unavailable",
			"teams", g.teamIDs(), "retry_in", g.m.cfg.RetryAfterFailure)
	}
}

// backoff is the wait before reconnect attempt n (0-based): 100 ms
// doubling to 30 s, with equal jitter.
func backoff(n int) time.Duration {
	d := backoffMax
	if n < 16 {
		d = min(backoffMin<<n, backoffMax)
	}
	return d/2 + rand.N(d/2+1)
}

// connect opens one socket: a fresh URL from apps.connections.open, the
// websocket, and its hello. It returns the session with its reader running.
func (g *appGroup) connect(ctx context.Context, c *socketConn, gen int) (*session, error) {
	_, url, err := g.api.StartSocketModeContext(ctx)
	if err != nil {
		return nil, err
	}
	dialer := websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: handshakeTimeout,
		ReadBufferSize:   8 << 10,
		WriteBufferSize:  1 << 10,
	}
	hdr := http.Header{}
	hdr.Set("Origin", "https://api.slack.com")
	ws, resp, err := dialer.DialContext(ctx, url, hdr)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial socket mode: %w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial socket mode: %w", err)
	}
	ws.SetReadLimit(readLimit)

	// The first frame is hello (or a disconnect: too_many_websockets,
	// link_disabled).
	_ = ws.SetReadDeadline(time.Now().Add(helloTimeout))
	stopDial := context.AfterFunc(ctx, func() { _ = ws.Close() })
	_, data, err := ws.ReadMessage()
	stopDial()
	if err != nil {
		_ = ws.Close()
		return nil, fmt.Errorf("read hello: %w", err)
	}
	h, ok := scanFrame(data)
	if !ok || h.Type != "hello" {
		_ = ws.Close()
		if ok && h.Type == "disconnect" {
			return nil, errDisconnected{reason: h.Reason}
		}
		what := "unparseable"
		if ok && h.Type != "" {
			what = h.Type
		}
		return nil, fmt.Errorf("socket mode: first frame is %q, not hello", what)
	}
	if ctx.Err() != nil {
		_ = ws.Close()
		return nil, ctx.Err()
	}
	if id := h.AppID; id != "" {
		g.mu.Lock()
		g.appID = id
		g.mu.Unlock()
	}
	g.m.log.Debug("socket connected", "app_id", g.appIDOr(), "conn", c.id, "gen", gen, "num_connections", h.NumConnections)

	s := &session{
		g:          g,
		c:          c,
		gen:        gen,
		ws:         ws,
		timeout:    2 * g.m.cfg.PingInterval,
		disconnect: make(chan string, 1),
		done:       make(chan struct{}),
	}
	ws.SetPingHandler(s.onPing)
	g.sessionLive(c, 1)
	g.m.hook(c.id, gen, "hello")
	g.m.wg.Go(s.read)
	return s, nil
}

// session is one websocket of a slot. Its reader goroutine is the only
// reader; data frames (acks) are written by that reader under wmu, control
// frames (pong, close) by gorilla's WriteControl, which is safe alongside.
type session struct {
	g       *appGroup
	c       *socketConn
	gen     int
	ws      *websocket.Conn
	timeout time.Duration // no frame or ping for this long: the socket is dead

	wmu      sync.Mutex
	stopping bool // under wmu: no more acks, no more hand-offs

	disconnect chan string   // reason of a disconnect frame
	done       chan struct{} // closed when the reader returned
	err        error         // the reader's error, set before done
	lastDL     time.Time     // reader only: when the read deadline was last pushed
	closeOnce  sync.Once
}

func (s *session) readErr() error {
	<-s.done
	return s.err
}

// onPing answers a server PING and pushes the read deadline back.
func (s *session) onPing(data string) error {
	s.pushDeadline(time.Now(), true)
	err := s.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	if err == nil || errors.Is(err, websocket.ErrCloseSent) {
		return nil
	}
	var ne interface{ Temporary() bool }
	if errors.As(err, &ne) && ne.Temporary() {
		return nil
	}
	return err
}

// pushDeadline moves the read deadline to now+timeout, at most every
// timeout/8 unless forced (it is a runtime call per frame otherwise).
func (s *session) pushDeadline(now time.Time, force bool) {
	if !force && now.Sub(s.lastDL) < s.timeout/8 {
		return
	}
	s.lastDL = now
	_ = s.ws.SetReadDeadline(now.Add(s.timeout))
}

// read is the read loop: for each frame, find the envelope id and type,
// reserve room in the hand-off queue, write the ack, hand the raw payload to
// the normalizers, and read the next frame. Nothing here waits on anything
// but the ack's write.
func (s *session) read() {
	defer func() {
		s.g.sessionLive(s.c, -1)
		s.g.m.hook(s.c.id, s.gen, "closed")
		close(s.done)
	}()
	s.pushDeadline(time.Now(), true)
	for {
		mt, r, err := s.ws.NextReader()
		if err != nil {
			s.err = err
			return
		}
		now := time.Now()
		s.pushDeadline(now, false)
		if mt != websocket.TextMessage {
			continue
		}
		buf := getFrameBuf()
		if *buf, err = readFrame(r, (*buf)[:0]); err != nil {
			putFrameBuf(buf)
			s.err = err
			return
		}
		s.handle(buf, now)
	}
}

// readFrame appends the rest of r to b.
func readFrame(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// handle reacts to one text frame; buf is the frame and is given up (to the
// pool or the hand-off).
func (s *session) handle(buf *[]byte, now time.Time) {
	g := s.g
	mx := g.m.cfg.Metrics
	frame := *buf
	h, ok := scanFrame(frame)
	if !ok {
		// Not a well-formed frame (Slack sends none; a broken proxy might):
		// what the tolerant scan fished out is logged, not trusted for an
		// ack.
		putFrameBuf(buf)
		mx.Envelope("unparseable")
		g.m.log.Warn("unparseable socket mode frame", "envelope_id", h.EnvelopeID, "type", h.Type)
		return
	}
	switch h.Type {
	case "events_api":
		mx.Envelope(h.Type)
		if len(h.Payload) == 0 || h.EnvelopeID == "" {
			putFrameBuf(buf)
			g.m.log.Warn("events_api envelope without payload or id", "envelope_id", h.EnvelopeID)
			s.ack(h.EnvelopeID, now)
			return
		}
		s.deliver(h, buf, now)
	case "disconnect":
		putFrameBuf(buf)
		select {
		case s.disconnect <- cmp.Or(h.Reason, "unknown"):
		default:
		}
	case "hello":
		putFrameBuf(buf)
	case "slash_commands", "interactive":
		putFrameBuf(buf)
		mx.Envelope(h.Type)
		s.ack(h.EnvelopeID, now)
	default:
		putFrameBuf(buf)
		mx.Envelope(cmp.Or(h.Type, "unparseable"))
		if h.EnvelopeID == "" {
			g.m.log.Warn("socket mode frame without envelope id ignored", "type", h.Type)
			return
		}
		g.m.log.Warn("unknown socket mode envelope acked and ignored", "envelope_id", h.EnvelopeID, "type", h.Type)
		s.ack(h.EnvelopeID, now)
	}
}

// deliver reserves room in the hand-off queue, acks and hands the payload
// to the normalizers. Without room the envelope stays unacked: Slack
// redelivers it (to this socket or another daemon), which beats acking and
// dropping.
func (s *session) deliver(h frameHead, buf *[]byte, receivedAt time.Time) {
	m := s.g.m
	s.wmu.Lock()
	if s.stopping {
		s.wmu.Unlock()
		putFrameBuf(buf)
		return
	}
	if !m.reserve() {
		s.wmu.Unlock()
		putFrameBuf(buf)
		m.cfg.Metrics.QueueFull()
		s.g.logFull(h.EnvelopeID)
		return
	}
	err, skipped := s.writeAckLocked(h.EnvelopeID)
	m.raw <- rawEnvelope{g: s.g, buf: buf, payload: h.Payload, retry: h.RetryAttempt, receivedAt: receivedAt}
	s.wmu.Unlock()
	s.ackDone(h.EnvelopeID, receivedAt, err, skipped)
}

// ack writes the ack of an envelope that is not handed off.
func (s *session) ack(envelopeID string, receivedAt time.Time) {
	if envelopeID == "" {
		return
	}
	s.wmu.Lock()
	if s.stopping {
		s.wmu.Unlock()
		return
	}
	err, skipped := s.writeAckLocked(envelopeID)
	s.wmu.Unlock()
	s.ackDone(envelopeID, receivedAt, err, skipped)
}

// writeAckLocked writes {"envelope_id":"…"}; the caller holds wmu.
func (s *session) writeAckLocked(envelopeID string) (err error, skipped bool) {
	if d := s.g.m.dropAck; d != nil && d(envelopeID) {
		return nil, true
	}
	b := make([]byte, 0, len(envelopeID)+18)
	b = append(b, `{"envelope_id":`...)
	b = strconv.AppendQuote(b, envelopeID)
	b = append(b, '}')
	_ = s.ws.SetWriteDeadline(time.Now().Add(s.g.m.cfg.AckTimeout))
	return s.ws.WriteMessage(websocket.TextMessage, b), false
}

func (s *session) ackDone(envelopeID string, receivedAt time.Time, err error, skipped bool) {
	if skipped {
		return
	}
	s.g.m.cfg.Metrics.Ack(time.Since(receivedAt), err)
	if err != nil {
		s.g.m.log.Warn("ack failed; slack will redeliver", "envelope_id", envelopeID, "error", errString(err))
		// A failed write leaves gorilla's connection unusable: end it.
		_ = s.ws.NetConn().Close()
	}
}

// close ends the session gracefully: no more acks or hand-offs, a close
// frame after the acks already written, a short wait for Slack's answer
// (frames that still arrive are left unacked for redelivery), then the
// socket is closed and the reader has returned.
func (s *session) close() {
	if s == nil {
		return
	}
	s.closeOnce.Do(func() {
		s.wmu.Lock()
		s.stopping = true
		_ = s.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(ackFlush))
		s.wmu.Unlock()
		t := time.NewTimer(ackFlush)
		select {
		case <-s.done:
		case <-t.C:
		}
		t.Stop()
		_ = s.ws.Close()
		<-s.done
	})
}

// closeSessions closes the given sessions concurrently.
func closeSessions(ss ...*session) {
	var wg sync.WaitGroup
	for _, s := range ss {
		if s != nil {
			wg.Go(s.close)
		}
	}
	wg.Wait()
}

// revoke marks every workspace of the app revoked, once, and stops the app.
func (g *appGroup) revoke(ctx context.Context, err error) {
	g.revokeOnce.Do(func() {
		g.mu.Lock()
		g.revoked = true
		g.lastErr = konstruct.Redact(err.Error())
		g.mu.Unlock()
		teams := g.teamIDs()
		g.m.log.Error("slack refused the app-level token; marking its workspaces revoked",
			"app_id", g.appIDOr(), "teams", teams, "error", konstruct.Redact(err.Error()))
		if g.m.cfg.OnRevoked != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			for _, id := range teams {
				g.m.cfg.OnRevoked(rctx, id)
			}
			cancel()
		}
		g.stop()
		g.m.Trigger()
	})
}

func (g *appGroup) logFull(envelopeID string) {
	g.logMu.Lock()
	defer g.logMu.Unlock()
	if time.Since(g.lastFull) < time.Second {
		return
	}
	g.lastFull = time.Now()
	g.m.log.Warn("router queue full; envelope left unacked for Slack to redeliver",
		"envelope_id", envelopeID, "app_id", g.appIDOr(), "queue_size", cap(g.m.events))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return konstruct.Redact(err.Error())
}

// Frame buffers are pooled: a frame is read into one, and the normalizer
// returns it once the message is decoded (normalize copies what it keeps).
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func getFrameBuf() *[]byte { return frameBufs.Get().(*[]byte) }

func putFrameBuf(b *[]byte) {
	if b == nil || cap(*b) > 64<<10 {
		return
	}
	*b = (*b)[:0]
	frameBufs.Put(b)
}
