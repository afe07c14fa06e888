package bot

import (
	"context"
	"encoding/json"
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
	"github.com/konstruct/konstruct/metrics"
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

// revoke drops a team from the list, as the store does on SetWorkspaceStatus.
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

// runManager runs a Manager against cfg.APIURL until the test ends, with a
// test recorder unless cfg has a Recorder: then it releases a held
// recorder, cancels Run's context and checks Run's error.
func runManager(t *testing.T, cfg ManagerConfig, hooks func(*Manager)) *Manager {
	t.Helper()
	cfg.HTTPClient = simClient(t)
	cfg.HTTPClient.Timeout = 10 * time.Second
	if cfg.Recorder == nil {
		cfg.Recorder = newRecorder()
	}
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
	})
	if r, ok := cfg.Recorder.(*recorder); ok {
		// Cleanups run last first: a held Record must not stall the drain.
		t.Cleanup(r.release)
	}
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

// next returns the next message m's test recorder recorded.
func next(t *testing.T, m *Manager, d time.Duration) konstruct.Message {
	t.Helper()
	msg, ok := recOf(m).next(time.Now().Add(d))
	if !ok {
		t.Fatalf("nothing recorded within %v", d)
	}
	return msg
}

// collect reads recorded messages until it has seen every ts in want (any
// event type).
func collect(t *testing.T, m *Manager, d time.Duration, want ...string) map[string][]konstruct.Message {
	t.Helper()
	r := recOf(m)
	got := map[string][]konstruct.Message{}
	deadline := time.Now().Add(d)
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
		msg, ok := r.next(deadline)
		if !ok {
			t.Fatalf("not recorded within %v: %v", d, missing())
		}
		got[msg.TS] = append(got[msg.TS], msg)
	}
	return got
}

// recOf is the test recorder of a Manager started by runManager.
func recOf(m *Manager) *recorder { return m.cfg.Recorder.(*recorder) }

// recorder is the tests' Recorder: it keeps every message it records, in
// order (next and collect read them), and can be held (Record waits until
// released), slowed, or made to fail.
type recorder struct {
	mu      sync.Mutex
	msgs    []konstruct.Message // recorded, in order
	read    int                 // next's cursor in msgs
	events  map[string]int      // records by event id
	batches []int               // sizes of the successful Record calls
	failed  int                 // failed Record calls
	gate    chan struct{}       // non-nil: Record waits for it to close
	held    int                 // messages of the Record calls not returned yet
	err     error               // non-nil: Record fails with it
	delay   time.Duration       // how long a Record takes (slow storage)
	changed chan struct{}       // closed and replaced on every record
}

func newRecorder() *recorder {
	return &recorder{events: map[string]int{}, changed: make(chan struct{})}
}

func (r *recorder) Record(ctx context.Context, msgs []konstruct.Message) error {
	r.mu.Lock()
	gate, delay := r.gate, r.delay
	r.held += len(msgs)
	r.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
		}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held -= len(msgs)
	err := ctx.Err()
	if err == nil {
		err = r.err
	}
	if err != nil {
		r.failed++
		return err
	}
	// msgs is the caller's buffer: keep copies.
	r.msgs = append(r.msgs, msgs...)
	for _, m := range msgs {
		r.events[m.EventID]++
	}
	r.batches = append(r.batches, len(msgs))
	close(r.changed)
	r.changed = make(chan struct{})
	return nil
}

// hold makes Record wait until release.
func (r *recorder) hold() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gate == nil {
		r.gate = make(chan struct{})
	}
}

// release lets held and later Record calls through.
func (r *recorder) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gate != nil {
		close(r.gate)
		r.gate = nil
	}
}

// fail makes Record fail with err (nil: succeed again).
func (r *recorder) fail(err error) {
	r.mu.Lock()
	r.err = err
	r.mu.Unlock()
}

// slow makes every Record take d.
func (r *recorder) slow(d time.Duration) {
	r.mu.Lock()
	r.delay = d
	r.mu.Unlock()
}

// heldMessages is how many messages wait in Record calls (held or slow).
func (r *recorder) heldMessages() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.held
}

// next returns the next recorded message not returned yet, waiting for one
// until deadline.
func (r *recorder) next(deadline time.Time) (konstruct.Message, bool) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		r.mu.Lock()
		if r.read < len(r.msgs) {
			msg := r.msgs[r.read]
			r.read++
			r.mu.Unlock()
			return msg, true
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-t.C:
			return konstruct.Message{}, false
		}
	}
}

// recorded returns every message recorded so far.
func (r *recorder) recorded() []konstruct.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

// count is how many times an event was recorded.
func (r *recorder) count(eventID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events[eventID]
}

// calls returns the sizes of the successful Record calls and how many
// failed.
func (r *recorder) calls() (batches []int, failed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.batches), r.failed
}

// ackWatch checks, at every ack Slack sees, that the envelope's event was
// recorded before: write, then ack.
type ackWatch struct {
	mu    sync.Mutex
	acks  int
	early []string // envelope ids acked before their record
}

func watchAcks(sim *slacksim.Server, r *recorder) *ackWatch {
	w := &ackWatch{}
	sim.OnAck(func(st slacksim.EnvelopeStat) {
		recorded := r.count(st.EventID) > 0
		w.mu.Lock()
		defer w.mu.Unlock()
		w.acks++
		if !recorded {
			w.early = append(w.early, st.EnvelopeID)
		}
	})
	return w
}

// count is how many acks Slack saw (sim.Unacked drops just before the
// hook runs).
func (w *ackWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acks
}

// check reports acks that came before their record, and returns how many
// acks were watched.
func (w *ackWatch) check(t *testing.T) int {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.early) > 0 {
		t.Errorf("%d envelopes acked before they were recorded: %v", len(w.early), w.early)
	}
	return w.acks
}

// outcomes reads konstruct_route_outcomes_total by outcome.
func outcomes(t *testing.T, mx *metrics.Metrics) map[string]float64 {
	t.Helper()
	fams, err := mx.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "konstruct_route_outcomes_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// envelopeOf finds Slack's record of the envelope of an event.
func envelopeOf(sim *slacksim.Server, eventID string) (slacksim.EnvelopeStat, bool) {
	for _, st := range sim.Envelopes() {
		if st.EventID == eventID {
			return st, true
		}
	}
	return slacksim.EnvelopeStat{}, false
}

// intakeClosed reports whether the intake stopped taking envelopes (Run's
// context ended).
func intakeClosed(m *Manager) bool {
	m.intake.mu.RLock()
	defer m.intake.mu.RUnlock()
	return m.intake.closed
}

// rawEvent is an events_api envelope around an event_callback for ws, as
// Slack sends it, for sim.SendRaw (not tracked for acks: watch them with
// Manager.dropAck).
func rawEvent(ws slacksim.WorkspaceSpec, envelopeID, eventID string, ev map[string]any) []byte {
	payload := map[string]any{
		"type": "event_callback", "team_id": ws.TeamID, "api_app_id": ws.AppID, "event_id": eventID,
		"event_time": time.Now().Unix(), "event": ev,
		"authorizations": []map[string]any{{"team_id": ws.TeamID, "user_id": ws.BotUserID, "is_bot": true}},
	}
	b, _ := json.Marshal(map[string]any{"envelope_id": envelopeID, "type": "events_api", "payload": payload,
		"accepts_response_payload": false, "retry_attempt": 0})
	return b
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
