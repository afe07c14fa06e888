package bot

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// helloTimeout bounds the wait for the first frame of a new socket.
	helloTimeout = 10 * time.Second
	// handshakeTimeout bounds the websocket upgrade.
	handshakeTimeout = 10 * time.Second
	// readLimit is the largest frame accepted (Slack's are a few KiB).
	readLimit = 8 << 20
)

// errDisconnected is a disconnect frame received instead of hello.
type errDisconnected struct{ reason string }

func (e errDisconnected) Error() string { return "socket mode disconnect: " + e.reason }

// dial opens one socket for the slot: a fresh URL from
// apps.connections.open, the websocket, and its hello. It returns the
// session with its reader running.
func (s *slot) dial(ctx context.Context) (*session, error) {
	g := s.g
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
	g.setAppID(h.AppID)
	g.m.log.Debug("socket connected", "app_id", g.appIDOr(), "conn", s.id, "gen", s.gen, "num_connections", h.NumConnections)

	sess := &session{
		g:          g,
		slot:       s,
		gen:        s.gen,
		ws:         ws,
		timeout:    2 * g.m.cfg.PingInterval,
		disconnect: make(chan string, 1),
		done:       make(chan struct{}),
	}
	ws.SetPingHandler(sess.onPing)
	s.sessionLive(1)
	g.m.hook(s.id, s.gen, "hello")
	g.m.wg.Go(sess.read)
	return sess, nil
}
