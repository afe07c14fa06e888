package bench

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// durable measures the ack with the intake's durable write: a daemon of
// its own on a private redis-server with AOF (the shared Redis of the other
// phases is never stopped), the same load three times — Redis with
// appendfsync everysec, with appendfsync always, and stopped, when the
// records go to the disk spool — then Redis back: how long the spool takes
// to drain and the spooled mentions to be answered. Its mentions count in
// the run's integrity check.
func (r *runner) durable(ctx context.Context) {
	o := r.o
	n := min(o.DurableWorkspaces, len(r.allWS))
	d := &Durable{Workspaces: n, MentionShare: o.DurableMentionShare}
	r.rep.Durable = d
	fail := func(format string, args ...any) {
		d.Error = fmt.Sprintf(format, args...)
		r.log("durable-ack phase: %s", d.Error)
	}
	srv, err := startRedisServer(filepath.Join(o.OutDir, "redis-durable"), "everysec")
	if errors.Is(err, ErrNoRedisServer) {
		d.Skipped = err.Error()
		r.log("durable-ack phase skipped: %s", d.Skipped)
		return
	}
	if err != nil {
		fail("%v", err)
		return
	}
	defer func() { _ = srv.Stop() }()
	addr, err := freeAddr()
	if err != nil {
		fail("%v", err)
		return
	}
	env := withEnv(r.env,
		"KONSTRUCT_REDIS_URL="+srv.URL(),
		"KONSTRUCT_HTTP_ADDR="+addr,
		"KONSTRUCT_STATE_DIR="+filepath.Join(o.OutDir, "state-durable"))
	p, took, err := r.spawnDaemon(ctx, env, r.allWS, daemonStartBound)
	if err != nil {
		fail("start the daemon: %v", err)
		return
	}
	defer func() {
		if err := p.stop(daemonStopGrace); err != nil {
			r.log("durable-ack daemon stop: %v", err)
		}
	}()
	r.log("durable-ack phase: a daemon on a private redis-server (%s), %d sockets open in %v; %d env/s over %d workspaces, %.0f%% mentions",
		srv.URL(), len(r.allWS)*connectionsPerWorkspace, took.Round(time.Millisecond), o.DurableRate, n, o.DurableMentionShare*100)

	tgt := newTarget("konstruct", r.allWS[:n])
	mentionEvery := every(o.DurableMentionShare)
	var all []*mention
	phase := func(path string, ackWait time.Duration) driveResult {
		res := r.drive(ctx, drive{tgt: tgt, phase: "durable-" + path, rate: o.DurableRate, dur: o.Phase, mentionEvery: mentionEvery, ackWait: ackWait})
		row := DurableRow{Path: path, AckRow: AckRow{Target: "konstruct", Rate: o.DurableRate, Actual: round1(res.actual),
			Sent: res.sent, Acked: len(res.acks), Redeliveries: res.redel, Ack: distOf(res.acks)}}
		d.Rows = append(d.Rows, row)
		all = append(all, res.mentions...)
		r.log("durable %-28s %5d env/s: sent %d (%.0f/s), acked %d, ack p50 %.3f p99 %.3f max %.3f ms, redelivered %d",
			path, o.DurableRate, row.Sent, row.Actual, row.Acked, row.Ack.P50, row.Ack.P99, row.Ack.Max, row.Redeliveries)
		return res
	}

	res := phase("redis (appendfsync everysec)", 0)
	r.waitAnswered(ctx, res.mentions, time.Now().Add(o.Drain))
	if err := srv.setFsync(ctx, "always"); err != nil {
		fail("%v", err)
		return
	}
	res = phase("redis (appendfsync always)", 0)
	r.waitAnswered(ctx, res.mentions, time.Now().Add(o.Drain))

	// Redis stopped: every record goes to the spool.
	wctx, stopWatch := context.WithCancel(ctx)
	var watch spoolWatch
	watched := make(chan struct{})
	go func() { defer close(watched); watch.run(wctx, addr) }()
	defer func() { stopWatch(); <-watched }()
	if err := srv.Stop(); err != nil {
		fail("stop redis-server: %v", err)
		return
	}
	// Every ack is waited for with Redis still down, however late.
	res = phase("spool (Redis stopped)", 20*time.Second)
	back := time.Now()
	if err := srv.Start(); err != nil {
		fail("start redis-server again: %v", err)
		return
	}
	// The spool drains into Redis, then the router answers what it held.
	for ctx.Err() == nil && time.Since(back) < spoolDrainBound {
		if m, err := scrape(ctx, addr); err == nil {
			watch.observe(m)
			if sum(m, metricSpool) == 0 {
				break
			}
		}
		time.Sleep(spoolPollEvery)
	}
	d.ReplaySeconds = round3(time.Since(back).Seconds())
	if left := r.waitAnswered(ctx, res.mentions, time.Now().Add(o.Drain)); left > 0 {
		r.log("durable-ack phase: %d of %d spooled mentions unanswered after %v", left, len(res.mentions), o.Drain)
	}
	_, _, lastWrite := r.latencies(res.mentions)
	if !lastWrite.IsZero() {
		d.AnsweredSeconds = round3(max(0, lastWrite.Sub(back).Seconds()))
	}
	d.SpoolPeak, _, d.Spooled, _ = watch.snapshot()
	r.log("durable-ack phase: spool peak %d records (%d spooled), drained %.2f s after Redis came back, last answer after %.2f s",
		d.SpoolPeak, d.Spooled, d.ReplaySeconds, d.AnsweredSeconds)

	r.waitAnswered(ctx, all, time.Now().Add(o.Drain))
	time.Sleep(max(time.Second, 2*r.llmTime))
	r.integrity(all)
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }
