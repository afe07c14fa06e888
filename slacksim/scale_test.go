package slacksim_test

import (
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/konstruct/konstruct/slacksim"
)

// TestScale holds 2 sockets for each of many workspaces and pushes mentions
// through them as fast as possible, acking every envelope.
func TestScale(t *testing.T) {
	workspaces, mentions := 1000, 2500 // 2,000 sockets, 5,000 envelopes
	if testing.Short() || raceEnabled {
		workspaces, mentions = 200, 500
	}
	sim := slacksim.New(slacksim.WithRateLimits(false), slacksim.WithBotEcho(false))
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })

	var acked atomic.Int64
	var readers sync.WaitGroup
	var specs []slacksim.WorkspaceSpec
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	var conns []*websocket.Conn
	start := time.Now()
	for range workspaces {
		ws := sim.AddWorkspace(slacksim.WorkspaceSpec{})
		specs = append(specs, ws)
		for range 2 {
			req, _ := http.NewRequest(http.MethodPost, sim.APIURL()+"apps.connections.open", nil)
			req.Header.Set("Authorization", "Bearer "+ws.AppToken)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var out struct{ URL string }
			_ = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			c, resp, err := websocket.DefaultDialer.Dial(out.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			conns = append(conns, c)
			readers.Go(func() {
				for {
					_, data, err := c.ReadMessage()
					if err != nil {
						return
					}
					var env struct {
						EnvelopeID string `json:"envelope_id"`
					}
					if json.Unmarshal(data, &env) == nil && env.EnvelopeID != "" {
						if c.WriteJSON(env) != nil {
							return
						}
						acked.Add(1)
					}
				}
			})
		}
	}
	t.Logf("%d sockets connected in %v", len(conns), time.Since(start))
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
		readers.Wait()
	})

	start = time.Now()
	var senders sync.WaitGroup
	for g := range 8 {
		senders.Go(func() {
			for i := g; i < mentions; i += 8 {
				ws := specs[i%len(specs)]
				if _, err := sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "load", ""); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	senders.Wait()
	want := int64(2 * mentions)
	waitFor(t, 20*time.Second, func() bool { return acked.Load() == want && sim.Unacked() == 0 })
	d := time.Since(start)
	t.Logf("%d envelopes delivered and acked in %v (%.0f/s)", want, d, float64(want)/d.Seconds())
	if n := len(sim.Envelopes()); n != int(want) {
		t.Errorf("%d envelopes recorded, want %d", n, want)
	}
}
