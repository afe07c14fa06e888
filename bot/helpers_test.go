package bot

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/slacksim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func newSim(t *testing.T, opts ...slacksim.Option) *slacksim.Server {
	t.Helper()
	sim := slacksim.New(opts...)
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("start slacksim: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim
}

func workspaceOf(s slacksim.WorkspaceSpec) konstruct.Workspace {
	return konstruct.Workspace{
		ID: "w-" + s.TeamID, TenantID: "tenant-" + s.TeamID, TeamID: s.TeamID, AppID: s.AppID,
		BotUserID: s.BotUserID, BotID: s.BotID, AppToken: s.AppToken, BotToken: s.BotToken,
		Status: konstruct.WorkspaceActive,
	}
}

// source is a mutable workspace list standing in for the store.
type source struct {
	mu    sync.Mutex
	ws    []konstruct.Workspace
	calls atomic.Int64
}

func (s *source) set(ws ...konstruct.Workspace) {
	s.mu.Lock()
	s.ws = ws
	s.mu.Unlock()
}

func (s *source) list(context.Context) ([]konstruct.Workspace, error) {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ws), nil
}

// revokeAll drops a team from the list, as the store does on SetWorkspaceStatus.
func (s *source) revoke(_ context.Context, teamID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ws = slices.DeleteFunc(s.ws, func(w konstruct.Workspace) bool { return w.TeamID == teamID })
}

// simClient is an HTTP client for the sim whose idle connections close when
// the test ends.
func simClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// oneWorkspace starts a sim with one workspace and a source listing it.
func oneWorkspace(t *testing.T, opts ...slacksim.Option) (*slacksim.Server, slacksim.WorkspaceSpec, *source) {
	t.Helper()
	sim := newSim(t, opts...)
	ws := sim.AddWorkspace(slacksim.WorkspaceSpec{})
	src := &source{}
	src.set(workspaceOf(ws))
	return sim, ws, src
}

// startManager runs a Manager against the sim until the test ends.
func startManager(t *testing.T, sim *slacksim.Server, cfg ManagerConfig) *Manager {
	t.Helper()
	return startManagerWith(t, sim, cfg, nil)
}

// startManagerWith is startManager with the test hooks set before Run.
func startManagerWith(t *testing.T, sim *slacksim.Server, cfg ManagerConfig, hooks func(*Manager)) *Manager {
	t.Helper()
	cfg.APIURL = sim.APIURL()
	return runManager(t, cfg, hooks)
}

// runManager runs a Manager against cfg.APIURL until the test ends: then it
// cancels Run's context, checks Run's error and drains Events.
func runManager(t *testing.T, cfg ManagerConfig, hooks func(*Manager)) *Manager {
	t.Helper()
	cfg.HTTPClient = simClient(t)
	cfg.HTTPClient.Timeout = 10 * time.Second
	m := NewManager(cfg)
	if hooks != nil {
		hooks(m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		for range m.Events() { //nolint:revive // drain
		}
	})
	return m
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func next(t *testing.T, m *Manager, d time.Duration) konstruct.Message {
	t.Helper()
	select {
	case msg, ok := <-m.Events():
		if !ok {
			t.Fatal("events closed")
		}
		return msg
	case <-time.After(d):
		t.Fatalf("no event within %v", d)
	}
	return konstruct.Message{}
}

// collect reads events until it has seen every ts in want (any event type).
func collect(t *testing.T, m *Manager, d time.Duration, want ...string) map[string][]konstruct.Message {
	t.Helper()
	got := map[string][]konstruct.Message{}
	deadline := time.After(d)
	missing := func() []string {
		var out []string
		for _, ts := range want {
			if len(got[ts]) == 0 {
				out = append(out, ts)
			}
		}
		return out
	}
	for len(missing()) > 0 {
		select {
		case msg := <-m.Events():
			got[msg.TS] = append(got[msg.TS], msg)
		case <-deadline:
			t.Fatalf("missing events for %v", missing())
		}
	}
	return got
}

// sessionLog records the onSession hook's events in order.
type sessionLog struct {
	mu     sync.Mutex
	events []string // "conn/gen/event"
}

func (l *sessionLog) hook(conn, gen int, event string) {
	l.mu.Lock()
	l.events = append(l.events, fmt.Sprintf("%d/%d/%s", conn, gen, event))
	l.mu.Unlock()
}

func (l *sessionLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

func (l *sessionLog) index(ev string) int { return slices.Index(l.snapshot(), ev) }
