package bot

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/slacksim"
)

// TestGatewaysShareAppsWithinSlacksLimit: six gateways, two sockets each
// per app — twelve if each connected every app, past Slack's 10. With
// leases in Redis each app is held by two gateways (four sockets), the
// apps spread over the gateways, and no app ever has more than 10 sockets.
// When the gateways holding an app stop, others take it over, and every
// app keeps a socket up meanwhile.
func TestGatewaysShareAppsWithinSlacksLimit(t *testing.T) {
	t.Parallel()
	sim := newSim(t)
	src := &source{}
	var apps []slacksim.WorkspaceSpec
	for range 4 {
		w := sim.AddWorkspace(slacksim.WorkspaceSpec{})
		apps = append(apps, w)
	}
	ws := src.ws
	for _, a := range apps {
		ws = append(ws, workspaceOf(a))
	}
	src.set(ws...)
	rd := testenv.NewRedis(t)

	type gw struct {
		m    *Manager
		stop context.CancelFunc
		done chan error
	}
	gws := map[string]*gw{}
	for i := range 6 {
		id := fmt.Sprintf("gw%d", i)
		cfg := ManagerConfig{
			APIURL: sim.APIURL(), Source: src.list, ConnectionsPerWorkspace: 2, ReconcileEvery: time.Second,
			Leases: rd.NewQueue(t, queue.Config{}), GatewayID: id, Recorder: newRecorder(), HTTPClient: simClient(t),
		}
		m := NewManager(cfg)
		ctx, cancel := context.WithCancel(context.Background())
		g := &gw{m: m, stop: cancel, done: make(chan error, 1)}
		go func() { g.done <- m.Run(ctx) }()
		gws[id] = g
		t.Cleanup(func() { cancel(); <-g.done })
	}

	// Watch every app's sockets the whole time.
	var mu sync.Mutex
	peak := map[string]int{}
	low := map[string]int{}
	watching := true
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			mu.Lock()
			if !watching {
				mu.Unlock()
				return
			}
			for _, a := range apps {
				peak[a.AppID] = max(peak[a.AppID], sim.Connections(a.AppID))
			}
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	settled := func(want int) func() bool {
		return func() bool {
			for _, a := range apps {
				if sim.Connections(a.AppID) != want {
					return false
				}
			}
			return true
		}
	}
	// Settled: each app on the two gateways rendezvous hashing chooses
	// among the six, four sockets each.
	running := func() map[string][]string { // app → gateways running it
		out := map[string][]string{}
		for id, g := range gws {
			for _, s := range g.m.States() {
				if s.Connected > 0 {
					out[s.AppID] = append(out[s.AppID], id)
				}
			}
		}
		for _, hs := range out {
			slices.Sort(hs)
		}
		return out
	}
	chosen := func() map[string][]string {
		ids := slices.Sorted(maps.Keys(gws))
		out := map[string][]string{}
		for _, a := range apps {
			out[a.AppID] = slices.Sorted(slices.Values(rendezvous(appKey(a.AppToken), ids)[:2]))
		}
		return out
	}
	waitFor(t, 30*time.Second, "each app on its two chosen gateways", func() bool {
		return settled(4)() && reflect.DeepEqual(running(), chosen())
	})

	// The apps spread: no gateway holds all of them.
	holders := running()
	perGateway := map[string]int{}
	for app, hs := range holders {
		if len(hs) != 2 {
			t.Errorf("app %s runs on %v, want two gateways", app, hs)
		}
		for _, h := range hs {
			perGateway[h]++
		}
	}
	for id, n := range perGateway {
		if n == len(apps) {
			t.Errorf("gateway %s holds every app: the apps do not spread (%v)", id, perGateway)
		}
	}

	// The two gateways of the first app stop; others take it over while
	// it keeps a socket up.
	first := apps[0].AppID
	mu.Lock()
	for _, a := range apps {
		low[a.AppID] = 100
	}
	mu.Unlock()
	lowWatch := make(chan struct{})
	go func() {
		defer close(lowWatch)
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			n := sim.Connections(first)
			low[first] = min(low[first], n)
			stop := !watching
			mu.Unlock()
			if stop {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	for i, id := range holders[first] {
		g := gws[id]
		if i == 1 {
			// One at a time, as a rolling restart does: the app's other
			// holder is replaced first.
			waitFor(t, 30*time.Second, "the app back at four sockets", settled(4))
		}
		g.stop()
		if err := <-g.done; err != nil {
			t.Fatalf("gateway %s: %v", id, err)
		}
		g.done <- nil // for the cleanup
		delete(gws, id)
	}
	waitFor(t, 30*time.Second, "each app on its two chosen gateways again", func() bool {
		return settled(4)() && reflect.DeepEqual(running(), chosen())
	})
	mu.Lock()
	watching = false
	mu.Unlock()
	<-watchDone
	<-lowWatch
	for app, n := range peak {
		// At most leaseLimit gateways hold an app, each with its sockets
		// and one more while a socket is replaced: within Slack's 10.
		if most := leaseLimit(2) * 3; n > most || n > 10 {
			t.Errorf("app %s had %d sockets at once: the leases allow %d, Slack 10", app, n, most)
		}
	}
	if low[first] == 0 {
		t.Errorf("app %s had no socket up while its gateways were replaced", first)
	}
	t.Logf("peak sockets per app %v; the replaced app's lowest %d", peak, low[first])
}
