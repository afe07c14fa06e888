package bot

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/slack-go/slack"

	"github.com/konstruct/konstruct"
)

// appGroup is the set of sockets of one app-level token, shared by every
// workspace the app is installed in: its connection slots, the workspaces
// they serve, and what Slack said about the app (revoked, link_disabled).
type appGroup struct {
	m      *Manager
	token  string
	api    *slack.Client // apps.connections.open only
	slots  []*slot
	cancel context.CancelFunc
	// running counts the slots whose sockets are not closed yet.
	running atomic.Int32

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

func newAppGroup(m *Manager, token string, ws []konstruct.Workspace) *appGroup {
	g := &appGroup{m: m, token: token}
	g.api = slack.New("",
		slack.OptionAppLevelToken(token),
		slack.OptionAPIURL(m.cfg.APIURL),
		slack.OptionHTTPClient(m.cfg.HTTPClient))
	for i := range m.cfg.ConnectionsPerWorkspace {
		g.slots = append(g.slots, &slot{g: g, id: i})
	}
	g.setTeams(ws)
	return g
}

// start runs every slot of the app until stop or ctx ends.
func (g *appGroup) start(ctx context.Context) {
	ctx, g.cancel = context.WithCancel(ctx)
	for _, s := range g.slots {
		g.running.Add(1)
		g.m.wg.Go(func() {
			defer g.running.Add(-1)
			s.run(ctx)
		})
	}
}

// stopped reports whether every socket of the app is closed.
func (g *appGroup) stopped() bool { return g.running.Load() == 0 }

// stop asks the sockets to close; Manager.Run waits for them.
func (g *appGroup) stop() {
	if g.cancel != nil {
		g.cancel()
	}
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

// setAppID records the app id a hello gave.
func (g *appGroup) setAppID(id string) {
	if id == "" {
		return
	}
	g.mu.Lock()
	g.appID = id
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
	for _, s := range g.slots {
		if s.connected.Load() {
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
			Connections: len(g.slots),
			Connected:   connected,
			Revoked:     g.revoked,
			LastError:   g.lastErr,
		})
	}
	return out
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
// said link_disabled (Socket Mode turned off for the app), and returns the
// end of the pause: the workspaces are reported unavailable in States, not
// revoked, so turning Socket Mode back on needs no new `workspace add`.
func (g *appGroup) disable(log *slog.Logger) time.Time {
	g.mu.Lock()
	first := !time.Now().Before(g.disabledUntil)
	g.disabledUntil = time.Now().Add(g.m.cfg.RetryAfterFailure)
	until := g.disabledUntil
	g.lastErr = "link_disabled: Socket Mode is disabled for this app"
	g.mu.Unlock()
	if first {
		log.Error("slack refused socket mode for the app (link_disabled); its workspaces are unavailable",
			"teams", g.teamIDs(), "retry_in", g.m.cfg.RetryAfterFailure)
	}
	return until
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

// logFull logs a full hand-off queue at most once a second per app.
func (g *appGroup) logFull(envelopeID string) {
	g.logMu.Lock()
	defer g.logMu.Unlock()
	if time.Since(g.lastFull) < time.Second {
		return
	}
	g.lastFull = time.Now()
	g.m.log.Warn("intake full; envelope left unacked for Slack to redeliver",
		"envelope_id", envelopeID, "app_id", g.appIDOr(), "queue_size", g.m.cfg.QueueSize)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return konstruct.Redact(err.Error())
}
