package slacksim_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
	"go.uber.org/goleak"

	"github.com/konstruct/konstruct/slacksim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newSim starts a simulator with one workspace and closes it at cleanup.
func newSim(t *testing.T, opts ...slacksim.Option) (*slacksim.Server, slacksim.WorkspaceSpec) {
	t.Helper()
	sim := slacksim.New(opts...)
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim, sim.AddWorkspace(slacksim.WorkspaceSpec{TeamName: "Acme"})
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// apiClient is slack-go's Web API client pointed at the sim. Its transport is
// closed at cleanup so goleak sees no idle keep-alive goroutines.
func apiClient(t *testing.T, sim *slacksim.Server, ws slacksim.WorkspaceSpec) *slack.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return slack.New(ws.BotToken,
		slack.OptionAppLevelToken(ws.AppToken),
		slack.OptionAPIURL(sim.APIURL()),
		slack.OptionHTTPClient(&http.Client{Transport: tr, Timeout: 10 * time.Second}))
}

// smClient runs slack-go's socketmode client against the sim and collects its events.
type smClient struct {
	*socketmode.Client
	events chan socketmode.Event
}

func runSocketMode(t *testing.T, sim *slacksim.Server, ws slacksim.WorkspaceSpec) *smClient {
	t.Helper()
	sm := socketmode.New(apiClient(t, sim, ws))
	c := &smClient{Client: sm, events: make(chan socketmode.Event, 1000)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = sm.RunContext(ctx) })
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-sm.Events:
				select {
				case c.events <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return c
}

// next waits for the next event of one of the given types.
func (c *smClient) next(t *testing.T, d time.Duration, types ...socketmode.EventType) socketmode.Event {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev := <-c.events:
			for _, typ := range types {
				if ev.Type == typ {
					return ev
				}
			}
		case <-timer.C:
			t.Fatalf("no %v event within %v", types, d)
		}
	}
}

// rawConn is a bare websocket client, for checks below slack-go's abstractions.
type rawConn struct {
	t  *testing.T
	ws *websocket.Conn
}

func openURL(t *testing.T, sim *slacksim.Server, appToken string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, sim.APIURL()+"apps.connections.open", nil)
	req.Header.Set("Authorization", "Bearer "+appToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("apps.connections.open: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		OK    bool   `json:"ok"`
		URL   string `json:"url"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || !out.OK {
		t.Fatalf("apps.connections.open: %v %s", err, out.Error)
	}
	return out.URL
}

func dialRaw(t *testing.T, sim *slacksim.Server, ws slacksim.WorkspaceSpec) *rawConn {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(openURL(t, sim, ws.AppToken), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	resp.Body.Close()
	t.Cleanup(func() { _ = conn.Close() })
	return &rawConn{t: t, ws: conn}
}

func (r *rawConn) read(d time.Duration) map[string]any {
	r.t.Helper()
	_ = r.ws.SetReadDeadline(time.Now().Add(d))
	_, data, err := r.ws.ReadMessage()
	if err != nil {
		r.t.Fatalf("read frame: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		r.t.Fatalf("frame %s: %v", data, err)
	}
	return m
}

func (r *rawConn) ack(id string) {
	r.t.Helper()
	if err := r.ws.WriteJSON(map[string]any{"envelope_id": id}); err != nil {
		r.t.Fatalf("ack: %v", err)
	}
}

// form posts a Web API call the way Slack's own clients do.
func form(t *testing.T, sim *slacksim.Server, method, token string, v url.Values) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, sim.APIURL()+method, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s: decode: %v", method, err)
	}
	return out
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
