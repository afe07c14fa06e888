package bot

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/slack-go/slack"
)

const (
	// backoffMin and backoffMax bound the reconnect backoff (jittered,
	// doubling per failed attempt).
	backoffMin = 100 * time.Millisecond
	backoffMax = 30 * time.Second
	// stableAfter is how long a socket must have lived for its end to
	// restart the backoff from backoffMin.
	stableAfter = 10 * time.Second
)

// slotState is where a connection slot is. The transitions:
//
//	connecting --hello-------------------------------------> up
//	connecting --connect failed----------------------------> backingOff
//	connecting --link_disabled instead of hello, or the
//	             app already paused------------------------> paused
//	up         --warning, refresh_requested, other reason--> refreshing
//	up         --lost, too_many_websockets, link_disabled--> backingOff
//	refreshing --hello: old closed now---------------------> up
//	refreshing --connect failed: old reads on--------------> backingOff
//	backingOff, paused --waited----------------------------> connecting, or refreshing if old reads on
//	any        --ctx ended, token refused------------------> stopped
type slotState int

const (
	slotConnecting slotState = iota // apps.connections.open, dial, hello
	slotUp                          // cur reads and acks
	slotRefreshing                  // connecting while old, asked to go, reads on
	slotBackingOff                  // waiting before the next connect
	slotPaused                      // the app is link_disabled: waiting for the pause to end
	slotStopped                     // ctx ended or Slack refused the token
)

// slot is one connection slot of an app: it keeps one socket open until
// ctx ends or Slack refuses the token. Every connect asks
// apps.connections.open for a fresh, single-use URL. A disconnect frame
// with reason warning or refresh_requested opens the replacement first and
// closes the old socket only once the new one said hello
// (make-before-break); a lost socket is replaced after a jittered backoff
// (100 ms doubling to 30 s).
//
// Only run's goroutine moves the slot between states and touches the
// fields above mu; the sessions' readers touch live and connected.
type slot struct {
	g   *appGroup
	id  int
	log *slog.Logger

	state   slotState
	cur     *session      // up: the socket that reads
	old     *session      // refreshing (and backing off from it): the socket being replaced, still reading
	attempt int           // failures since the last stable socket: picks the next backoff
	delay   time.Duration // backingOff, paused: how long to wait
	gen     int           // connects so far; numbers the sessions
	helloAt time.Time     // when cur said hello
	everUp  bool          // a socket said hello before: the next hello is a reconnect

	mu        sync.Mutex
	live      int // sessions that said hello and still read
	connected atomic.Bool
}

// run drives the slot until ctx ends or the app is revoked, then closes
// its sockets.
func (s *slot) run(ctx context.Context) {
	s.log = s.g.m.log.With("app_id", s.g.appIDOr(), "conn", s.id)
	defer s.stop()
	for {
		switch s.state {
		case slotConnecting, slotRefreshing:
			s.connect(ctx)
		case slotUp:
			s.serve(ctx)
		case slotBackingOff, slotPaused:
			s.wait(ctx, s.delay)
		case slotStopped:
			return
		}
	}
}

// connect opens a socket, unless the app is paused.
func (s *slot) connect(ctx context.Context) {
	if ctx.Err() != nil {
		s.state = slotStopped
		return
	}
	if until := s.g.pausedUntil(); !until.IsZero() {
		s.pause(until)
		return
	}
	s.gen++
	sess, err := s.dial(ctx)
	if err != nil {
		s.onConnectFailed(ctx, err)
		return
	}
	s.onHello(sess)
}

// onHello: the new socket is up, and the one it replaces may go.
func (s *slot) onHello(sess *session) {
	if s.old != nil {
		s.old.close()
		s.old = nil
	}
	if s.everUp {
		s.g.m.cfg.Metrics.Reconnect()
	}
	s.everUp = true
	s.cur, s.helloAt, s.state = sess, time.Now(), slotUp
}

// onConnectFailed: no socket this time. An auth error revokes the app, a
// link_disabled pauses it; anything else is retried after a backoff (at
// least the Retry-After of a rate limit).
func (s *slot) onConnectFailed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		s.state = slotStopped
		return
	}
	d := backoff(s.attempt)
	s.attempt++
	var disc errDisconnected
	var rl *slack.RateLimitedError
	switch {
	case IsAuthError(err):
		s.g.revoke(ctx, err)
		s.state = slotStopped
		return
	case errors.As(err, &disc) && disc.reason == "link_disabled":
		s.pause(s.g.disable(s.log))
		return
	case errors.As(err, &rl):
		d = max(d, rl.RetryAfter)
	}
	s.g.setErr(err)
	s.log.Warn("socket mode connect failed; retrying", "error", errString(err), "retry_in", d.Round(time.Millisecond))
	s.backOff(d)
}

// serve waits for the live socket to be told to go, or to end.
func (s *slot) serve(ctx context.Context) {
	select {
	case <-ctx.Done():
		s.state = slotStopped
	case reason := <-s.cur.disconnect:
		s.onDisconnect(reason)
	case <-s.cur.done:
		s.onLost(s.cur.readErr())
	}
}

// onDisconnect handles a disconnect frame on the live socket.
func (s *slot) onDisconnect(reason string) {
	switch reason {
	case "link_disabled":
		// Socket Mode turned off, or the token revoked: the next
		// apps.connections.open tells which (an auth error revokes the
		// app, a link_disabled instead of hello pauses it). The first
		// check goes at once.
		var d time.Duration
		if n := s.dropCur(); n > 0 {
			d = backoff(n)
		}
		s.log.Warn("slack disabled the socket (link_disabled); checking the app", "retry_in", d.Round(time.Millisecond))
		s.backOff(d)
	case "too_many_websockets":
		d := backoff(s.dropCur())
		s.log.Warn("too many websockets for the app; backing off", "retry_in", d.Round(time.Millisecond))
		s.backOff(d)
	default: // warning, refresh_requested, or a reason we don't know
		s.log.Debug("socket mode disconnect; replacing the socket first", "reason", reason)
		s.old, s.cur = s.cur, nil
		s.state = slotRefreshing
	}
}

// onLost: the live socket ended on its own (closed, no PING, a failed ack).
func (s *slot) onLost(err error) {
	d := backoff(s.dropCur())
	s.log.Info("socket lost; reconnecting", "error", errString(err), "retry_in", d.Round(time.Millisecond))
	s.backOff(d)
}

// dropCur closes the live socket and counts its end as a failed attempt,
// unless it lived stableAfter: that restarts the count. It returns the
// attempt number that picks the wait before the next connect.
func (s *slot) dropCur() int {
	s.cur.close()
	s.cur = nil
	if time.Since(s.helloAt) >= stableAfter {
		s.attempt = 0
		return 0
	}
	n := s.attempt
	s.attempt++
	return n
}

func (s *slot) backOff(d time.Duration) { s.state, s.delay = slotBackingOff, d }

func (s *slot) pause(until time.Time) { s.state, s.delay = slotPaused, time.Until(until) }

// wait sleeps d, then connects again, unless ctx ends first. A replaced
// socket that ends meanwhile is closed.
func (s *slot) wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		var oldDone <-chan struct{}
		if s.old != nil {
			oldDone = s.old.done
		}
		select {
		case <-ctx.Done():
			s.state = slotStopped
			return
		case <-t.C:
			s.state = slotConnecting
			if s.old != nil {
				s.state = slotRefreshing
			}
			return
		case <-oldDone:
			s.old.close()
			s.old = nil
		}
	}
}

// stop closes the sockets the slot still has.
func (s *slot) stop() {
	closeSessions(s.cur, s.old)
	s.cur, s.old, s.state = nil, nil, slotStopped
}

// sessionLive adds delta to the slot's live sessions and keeps the
// connected gauge in step.
func (s *slot) sessionLive(delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live += delta
	on := s.live > 0
	if s.connected.CompareAndSwap(!on, on) {
		if on {
			s.g.m.cfg.Metrics.SocketConnected(1)
		} else {
			s.g.m.cfg.Metrics.SocketConnected(-1)
		}
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
