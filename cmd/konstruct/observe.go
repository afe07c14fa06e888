package main

import (
	"context"
	"time"

	"github.com/konstruct/konstruct/metrics"
)

// observeEvery is how often the daemon samples what /metrics reports
// beyond the data path's own counters.
const observeEvery = 5 * time.Second

// observe publishes, every observeEvery until ctx ends, what the dashboard
// and the alert rules (deploy/) read and no piece counts as it goes:
// whether Postgres and Redis answer, the gateway's workspaces and sockets
// by state, and the age of the oldest unfinished reply. Run starts it
// with the other background loops.
func (d *daemonT) observe(ctx context.Context) {
	t := time.NewTicker(observeEvery)
	defer t.Stop()
	for {
		d.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sample takes one reading of each.
func (d *daemonT) sample(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	d.metrics.DependencyUp(metrics.DependencyPostgres, d.store.Ping(pctx) == nil)
	d.metrics.DependencyUp(metrics.DependencyRedis, d.queue.Ping(pctx) == nil)
	cancel()
	if d.manager != nil && d.loaded.Load() {
		states := d.manager.States()
		ws := make([]metrics.WorkspaceSockets, 0, len(states))
		for _, s := range states {
			ws = append(ws, metrics.WorkspaceSockets{AppID: s.AppID, Connections: s.Connections, Connected: s.Connected, Revoked: s.Revoked})
		}
		d.metrics.SetSockets(ws)
	}
	if d.worker != nil {
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if age, err := d.queue.OldestWaiting(qctx); err == nil {
			d.metrics.OldestWaiting(age)
		}
		cancel()
	}
}
