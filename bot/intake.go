package bot

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/tracing"
)

// Recorder writes the messages of envelopes durably before they are acked
// (*spool.Recorder: Redis, else a disk spool). An error means none of them
// is recorded: they stay unacked and Slack redelivers them.
type Recorder interface {
	Record(ctx context.Context, msgs []konstruct.Message) error
}

// inbound is an events_api or interactive envelope read from a socket,
// not acked yet.
type inbound struct {
	s           *session
	envelopeID  string
	buf         *[]byte // the frame, back to the pool once normalized
	payload     []byte  // within *buf
	retry       int
	receivedAt  time.Time
	interactive bool // a click (block_actions), not an event
}

// recordable is a normalized message waiting for its durable record.
type recordable struct {
	in  inbound
	msg konstruct.Message
	// span is the message's trace, from its envelope to its ack (nil:
	// tracing off).
	span trace.Span
}

// The intake pipeline, write then ack: read loops hand envelopes to a
// bounded inbox without waiting (a full inbox leaves the envelope unacked
// for Slack to redeliver); classifiers normalize them off the read loop and
// ack at once what needs no record (not a message, malformed, or what the
// payload alone shows the router would drop: bot posts, edits, channel
// chatter); the committer records the rest in group commits — whatever
// arrived while the previous write was in flight shares the next one —
// and acks each envelope once its record is durable.
type intake struct {
	m      *Manager
	mu     sync.RWMutex // closed is set under mu, sends happen under RLock
	closed bool
	// abandoned is set when the drain timed out: what is left is not
	// recorded any more (its sockets are closing; Slack redelivers it).
	abandoned atomic.Bool
	inbox     chan inbound
	commits   chan recordable

	classifiers sync.WaitGroup
	committed   chan struct{}
}

func newIntake(m *Manager) *intake {
	return &intake{
		m:         m,
		inbox:     make(chan inbound, m.cfg.QueueSize),
		commits:   make(chan recordable, m.cfg.QueueSize),
		committed: make(chan struct{}),
	}
}

func (in *intake) start() {
	for range in.m.cfg.Normalizers {
		in.classifiers.Go(in.classify)
	}
	go func() {
		// Once every classifier has returned, nothing more is committed.
		in.classifiers.Wait()
		close(in.commits)
	}()
	go in.commit()
}

// offer hands an envelope to the pipeline. A refusal (full, or closing at
// shutdown) leaves the envelope unacked for Slack to redeliver.
func (in *intake) offer(e inbound) offerResult {
	in.mu.RLock()
	defer in.mu.RUnlock()
	if in.closed {
		return offerClosing
	}
	select {
	case in.inbox <- e:
		in.depth()
		return offerTaken
	default:
		return offerFull
	}
}

type offerResult int

const (
	offerTaken offerResult = iota
	offerFull
	offerClosing
)

func (in *intake) depth() { in.m.cfg.Metrics.QueueDepth(len(in.inbox) + len(in.commits)) }

// drain takes no more envelopes and waits (up to d) until everything taken
// is recorded and acked, or left unacked. The sockets stay open meanwhile,
// so that the acks reach Slack.
func (in *intake) drain(d time.Duration) {
	in.mu.Lock()
	if !in.closed {
		in.closed = true
		close(in.inbox)
	}
	in.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-in.committed:
	case <-t.C:
		in.abandoned.Store(true)
		in.m.log.Warn("intake drain timed out; what is left stays unacked for Slack to redeliver")
	}
}

func (in *intake) classify() {
	m := in.m
	for e := range in.inbox {
		if m.beforeNormalize != nil {
			m.beforeNormalize()
		}
		var (
			msg konstruct.Message
			err error
		)
		if e.interactive {
			msg, err = NormalizeAction(e.payload, e.receivedAt)
		} else {
			msg, err = normalize(e.payload, e.receivedAt, e.s.g.botUser)
		}
		putFrameBuf(e.buf)
		e.buf, e.payload = nil, nil
		var revoked *RevokedError
		switch {
		case errors.As(err, &revoked):
			m.revokeTeam(revoked)
			// Acked before the reconcile that may close this socket.
			e.s.ack(e.envelopeID, e.receivedAt)
			m.Trigger()
		case errors.Is(err, ErrNotMessage):
			e.s.ack(e.envelopeID, e.receivedAt)
		case err != nil:
			m.log.Warn("malformed event acked and dropped", "app_id", e.s.g.appIDOr(), "error", errString(err))
			e.s.ack(e.envelopeID, e.receivedAt)
		default:
			msg.RetryAttempt = e.retry
			if m.cfg.Ignore != nil {
				if outcome, ignore := m.cfg.Ignore(msg); ignore {
					m.cfg.Metrics.Prefiltered(outcome)
					e.s.ack(e.envelopeID, e.receivedAt)
					continue
				}
			}
			r := recordable{in: e, msg: msg}
			if m.cfg.Tracer != nil {
				r.span = startEnvelope(m.cfg.Tracer, e, &r.msg)
			}
			in.commits <- r
		}
	}
}

// commit is the one committer: group commits in the order the classifiers
// hand them over (the spool replays in that order too).
func (in *intake) commit() {
	defer close(in.committed)
	m := in.m
	batch := make([]recordable, 0, 256)
	msgs := make([]konstruct.Message, 0, 256)
	for first := range in.commits {
		batch = append(batch[:0], first)
	gather:
		for len(batch) < cap(batch) {
			select {
			case r, ok := <-in.commits:
				if !ok {
					break gather
				}
				batch = append(batch, r)
			default:
				break gather
			}
		}
		if in.abandoned.Load() {
			endEnvelopes(batch, errAbandoned)
			continue // the drain timed out: left unacked, Slack redelivers
		}
		msgs = msgs[:0]
		for _, r := range batch {
			msgs = append(msgs, r.msg)
		}
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.RecordTimeout)
		err := m.cfg.Recorder.Record(ctx, msgs)
		cancel()
		if err != nil {
			m.cfg.Metrics.RecordFailed(len(batch))
			m.logUnrecorded(len(batch), err)
			endEnvelopes(batch, err)
			continue // unacked: Slack redelivers
		}
		for _, r := range batch {
			r.in.s.ack(r.in.envelopeID, r.in.receivedAt)
		}
		endEnvelopes(batch, nil)
		in.depth()
	}
}

// errAbandoned ends the span of an envelope left unacked when the drain
// timed out.
var errAbandoned = konstruct.Errorf(konstruct.EUNAVAILABLE, "intake drain timed out")

// startEnvelope starts the message's trace, from when its envelope was
// read, and writes its traceparent into the message before its record. Only
// ids go in the span: never the text.
func startEnvelope(t trace.Tracer, e inbound, msg *konstruct.Message) trace.Span {
	envelope := "events_api"
	if e.interactive {
		envelope = "interactive"
	}
	ctx, span := t.Start(context.Background(), "slack.envelope",
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithTimestamp(e.receivedAt),
		trace.WithAttributes(
			attribute.String("slack.envelope_type", envelope),
			attribute.String("slack.event_type", msg.EventType),
			attribute.String("slack.team_id", msg.TeamID),
			attribute.String("slack.channel_type", string(msg.ChannelType)),
			attribute.Int("slack.retry_attempt", e.retry),
		))
	msg.TraceParent = tracing.Inject(ctx)
	return span
}

// endEnvelopes ends the spans of a batch: recorded and acked, or not
// (err: left unacked for Slack to redeliver, which starts a new trace).
func endEnvelopes(batch []recordable, err error) {
	for _, r := range batch {
		if r.span != nil {
			tracing.End(r.span, err)
		}
	}
}

// revokeTeam marks a workspace revoked after Slack said the app lost it
// (app_uninstalled, tokens_revoked); the caller then triggers a reconcile:
// the sockets close when no other workspace uses the app.
func (m *Manager) revokeTeam(e *RevokedError) {
	m.log.Warn("slack says the app lost a workspace; marking it revoked", "team_id", e.TeamID, "event", e.Reason)
	if m.cfg.OnRevoked != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		m.cfg.OnRevoked(ctx, e.TeamID)
		cancel()
	}
}

// logUnrecorded logs a failed record at most once a second.
func (m *Manager) logUnrecorded(n int, err error) {
	m.logMu.Lock()
	defer m.logMu.Unlock()
	if time.Since(m.lastUnrecorded) < time.Second {
		return
	}
	m.lastUnrecorded = time.Now()
	m.log.Error("could not record envelopes (Redis and the disk spool both failed); left unacked for Slack to redeliver",
		"envelopes", n, "error", errString(err))
}
