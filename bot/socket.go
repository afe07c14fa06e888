package bot

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/konstruct/konstruct"
)

// ackFlush is how long a stopping socket stays open after its reader stopped,
// so the acks already handed to slack-go reach Slack.
const ackFlush = 150 * time.Millisecond

// appGroup is the set of sockets of one app-level token, shared by every
// workspace the app is installed in.
type appGroup struct {
	m      *Manager
	token  string
	conns  []*socketConn
	cancel context.CancelFunc

	mu      sync.Mutex
	teams   map[string]konstruct.Workspace
	appID   string // from hello, else from the workspaces
	revoked bool
	lastErr string

	revokeOnce sync.Once
	logMu      sync.Mutex
	lastFull   time.Time // last "queue full" log line
}

type socketConn struct {
	id        int
	connected atomic.Bool
}

func newAppGroup(m *Manager, token string, ws []konstruct.Workspace) *appGroup {
	g := &appGroup{m: m, token: token}
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

func (g *appGroup) setConnected(c *socketConn, on bool) {
	if c.connected.CompareAndSwap(!on, on) {
		if on {
			g.m.cfg.Metrics.SocketConnected(1)
		} else {
			g.m.cfg.Metrics.SocketConnected(-1)
		}
	}
}

// runConn keeps one socket open until ctx ends or Slack refuses the token.
func (g *appGroup) runConn(ctx context.Context, c *socketConn) {
	defer g.setConnected(c, false)
	api := slack.New("",
		slack.OptionAppLevelToken(g.token),
		slack.OptionAPIURL(g.m.cfg.APIURL),
		slack.OptionHTTPClient(g.m.cfg.HTTPClient))
	var opts []socketmode.Option
	if g.m.cfg.PingInterval > 0 {
		opts = append(opts, socketmode.OptionPingInterval(g.m.cfg.PingInterval))
	}
	sm := socketmode.New(api, opts...)
	log := g.m.log.With("app_id", g.appIDOr(), "conn", c.id)

	for {
		err := g.session(ctx, sm, c)
		g.setConnected(c, false)
		if ctx.Err() != nil {
			return
		}
		wait := g.m.cfg.RetryAfterFailure
		switch {
		case IsAuthError(err):
			g.revoke(ctx, err)
			return
		case errors.Is(err, context.Canceled), err == nil:
			// slack-go gave up on a session without a reason of its own;
			// reconnect soon (never in a hot loop).
			wait = time.Second
		default:
			g.setErr(err)
			log.Warn("socket mode failed; retrying later", "error", konstruct.Redact(err.Error()), "retry_in", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// session runs slack-go's RunContext (which reconnects by itself) and reads
// its events until ctx ends or RunContext gives up. On ctx end it stops
// reading first, so envelopes still buffered stay unacked (Slack redelivers
// them), lets the acks already written flush, then closes the socket.
func (g *appGroup) session(ctx context.Context, sm *socketmode.Client, c *socketConn) error {
	sockCtx, cancelSock := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSock()
	sockDone := make(chan error, 1)
	go func() { sockDone <- sm.RunContext(sockCtx) }()
	for {
		select {
		case <-ctx.Done():
			t := time.NewTimer(ackFlush)
			select {
			case <-t.C:
			case err := <-sockDone:
				t.Stop()
				return err
			}
			cancelSock()
			return <-sockDone
		case err := <-sockDone:
			return err
		case ev := <-sm.Events:
			g.handle(sm, c, ev)
		}
	}
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

// handle reacts to one slack-go event. It runs on the read loop: nothing
// here waits on anything but the ack.
func (g *appGroup) handle(sm *socketmode.Client, c *socketConn, ev socketmode.Event) {
	now := time.Now()
	mx := g.m.cfg.Metrics
	switch ev.Type {
	case socketmode.EventTypeConnecting:
		g.setConnected(c, false)
	case socketmode.EventTypeConnectionError:
		if ce, ok := ev.Data.(*slack.ConnectionErrorEvent); ok {
			g.setErr(ce.ErrorObj)
		}
	case socketmode.EventTypeInvalidAuth:
		g.setErr(errors.New("invalid_auth"))
	case socketmode.EventTypeConnected:
		g.setConnected(c, true)
		if ce, ok := ev.Data.(*socketmode.ConnectedEvent); ok && ce.ConnectionCount > 0 {
			mx.Reconnect()
		}
	case socketmode.EventTypeHello:
		if ev.Request != nil && ev.Request.ConnectionInfo.AppID != "" {
			g.mu.Lock()
			g.appID = ev.Request.ConnectionInfo.AppID
			g.mu.Unlock()
		}
	case socketmode.EventTypeEventsAPI:
		if ev.Request == nil {
			return
		}
		mx.Envelope(string(ev.Type))
		g.deliver(sm, ev.Request.EnvelopeID, ev.Request.Payload, ev.Request.RetryAttempt, now)
	case socketmode.EventTypeErrorBadMessage:
		bm, _ := ev.Data.(*socketmode.ErrorBadMessage)
		if bm == nil {
			return
		}
		h, ok := parseEnvelopeHead(bm.Message)
		mx.Envelope(cmp.Or(h.Type, "unparseable"))
		if ok && h.Type == socketmode.RequestTypeEventsAPI && len(h.Payload) > 0 {
			// slack-go could not parse the inner event; our own
			// decoder may (or tells it is not for us).
			g.deliver(sm, h.EnvelopeID, h.Payload, h.retryAttempt(), now)
			return
		}
		g.m.log.Warn("unparseable socket mode frame", "envelope_id", h.EnvelopeID, "type", h.Type, "error", errString(bm.Cause))
		g.ack(sm, h.EnvelopeID, now)
	case socketmode.EventTypeSlashCommand, socketmode.EventTypeInteractive:
		mx.Envelope(string(ev.Type))
		if ev.Request != nil {
			g.ack(sm, ev.Request.EnvelopeID, now)
		}
	case socketmode.EventTypeErrorWriteFailed:
		if wf, ok := ev.Data.(*socketmode.ErrorWriteFailed); ok {
			mx.Ack(0, wf.Cause)
			g.m.log.Warn("ack not written; slack will redeliver", "error", errString(wf.Cause))
		}
	case socketmode.EventTypeIncomingError:
		if ie, ok := ev.Data.(*slack.IncomingEventError); ok {
			g.m.log.Debug("socket read error", "error", errString(ie.ErrorObj))
		}
	}
}

// deliver normalizes an events_api payload, hands the message to the router
// queue and acks. A full queue leaves the envelope unacked: Slack redelivers
// it (to this socket or another daemon), which beats acking and dropping.
func (g *appGroup) deliver(sm *socketmode.Client, envelopeID string, payload []byte, retry int, receivedAt time.Time) {
	msg, err := normalize(payload, receivedAt, g.botUser)
	switch {
	case errors.Is(err, ErrNotMessage):
	case err != nil:
		g.m.log.Warn("malformed event acked and dropped", "envelope_id", envelopeID, "error", errString(err))
	default:
		msg.RetryAttempt = retry
		select {
		case g.m.events <- msg:
			g.m.cfg.Metrics.QueueDepth(len(g.m.events))
		default:
			g.m.cfg.Metrics.QueueFull()
			g.logFull(envelopeID, msg)
			return
		}
	}
	g.ack(sm, envelopeID, receivedAt)
}

func (g *appGroup) logFull(envelopeID string, msg konstruct.Message) {
	g.logMu.Lock()
	defer g.logMu.Unlock()
	if time.Since(g.lastFull) < time.Second {
		return
	}
	g.lastFull = time.Now()
	g.m.log.Warn("router queue full; envelope left unacked for Slack to redeliver",
		"envelope_id", envelopeID, "event_id", msg.EventID, "team_id", msg.TeamID, "queue_size", cap(g.m.events))
}

func (g *appGroup) ack(sm *socketmode.Client, envelopeID string, receivedAt time.Time) {
	if envelopeID == "" {
		return
	}
	if g.m.dropAck != nil && g.m.dropAck(envelopeID) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.m.cfg.AckTimeout)
	err := sm.AckCtx(ctx, envelopeID, nil)
	cancel()
	g.m.cfg.Metrics.Ack(time.Since(receivedAt), err)
	if err != nil {
		g.m.log.Warn("ack failed; slack will redeliver", "envelope_id", envelopeID, "error", errString(err))
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return konstruct.Redact(err.Error())
}
