package bot

import (
	"cmp"
	"errors"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// ackFlush bounds how long a closing socket waits for Slack's answer to its
// close frame (which tells every ack written before it was read).
const ackFlush = 150 * time.Millisecond

// session is one websocket of a slot. Its reader goroutine is the only
// reader; data frames (acks) are written by that reader under wmu, control
// frames (pong, close) by gorilla's WriteControl, which is safe alongside.
type session struct {
	g       *appGroup
	slot    *slot
	gen     int // the slot's connect that opened it
	ws      *websocket.Conn
	timeout time.Duration // no frame or ping for this long: the socket is dead

	wmu      sync.Mutex
	stopping bool // under wmu: no more acks

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

// read is the read loop: for each frame, find the envelope id and type and
// hand an events_api envelope to the intake (which acks it once recorded),
// or ack what needs nothing more, and read the next frame. Nothing here
// waits on anything but an ack's write.
func (s *session) read() {
	defer func() {
		s.slot.sessionLive(-1)
		s.g.m.hook(s.slot.id, s.gen, "closed")
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
	case "events_api", "interactive":
		// A click on one of the bot's buttons (interactive) is taken like
		// a post: recorded, then acked, then routed.
		mx.Envelope(h.Type)
		if len(h.Payload) == 0 || h.EnvelopeID == "" {
			putFrameBuf(buf)
			g.m.log.Warn("envelope without payload or id", "type", h.Type, "envelope_id", h.EnvelopeID)
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
	case "slash_commands":
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

// deliver hands an envelope to the intake, which acks it once recorded.
// Without room (or while the gateway stops) it stays unacked: Slack
// redelivers it (to this socket or another daemon), which beats acking and
// losing it.
func (s *session) deliver(h frameHead, buf *[]byte, receivedAt time.Time) {
	m := s.g.m
	switch m.intake.offer(inbound{s: s, envelopeID: h.EnvelopeID, buf: buf, payload: h.Payload, retry: h.RetryAttempt, receivedAt: receivedAt,
		interactive: h.Type == "interactive"}) {
	case offerTaken:
	case offerFull:
		putFrameBuf(buf)
		m.cfg.Metrics.QueueFull()
		s.g.logFull(h.EnvelopeID)
	case offerClosing:
		putFrameBuf(buf) // shutting down: Slack redelivers it elsewhere
	}
}

// ack writes the ack of an envelope (from the read loop, or from the
// intake once the envelope needs no record or is recorded). A closing
// socket writes no more acks: Slack redelivers those envelopes.
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
