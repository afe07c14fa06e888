package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/konstruct/konstruct/slacksim"
)

// addWorkspaces creates n workspaces in the emulator only (for the references).
func (r *runner) addWorkspaces(n int, name string) []slacksim.WorkspaceSpec {
	ws := make([]slacksim.WorkspaceSpec, n)
	for i := range ws {
		ws[i] = r.sim.AddWorkspace(slacksim.WorkspaceSpec{TeamName: fmt.Sprintf("%s %d", name, i)})
	}
	return ws
}

// waitSockets waits until every workspace's app has want sockets open.
func (r *runner) waitSockets(ctx context.Context, ws []slacksim.WorkspaceSpec, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n := 0
		for _, w := range ws {
			if r.sim.Connections(w.AppID) >= want {
				n++
			}
		}
		if n == len(ws) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d of %d workspaces connected after %v", n, len(ws), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// slackGo plays the ack phases against bare slack-go socketmode clients
// that only ack: one client (one socket) per workspace, in this process.
func (r *runner) slackGo(ctx context.Context) {
	ws := r.addWorkspaces(r.o.Workspaces, "slack-go")
	stop, err := r.startSlackGo(ctx, ws)
	defer stop()
	if err != nil {
		r.log("slack-go reference: %v", err)
		return
	}
	r.rep.Ack = append(r.rep.Ack, r.ackPhases(ctx, newTarget("slack-go", ws), false)...)
}

// startSlackGo connects a bare slack-go socketmode client that only acks
// to each workspace (one socket each, in this process) and waits for the
// sockets; stop disconnects them.
func (r *runner) startSlackGo(ctx context.Context, ws []slacksim.WorkspaceSpec) (stop func(), err error) {
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() {
		cancel()
		wg.Wait()
	}
	for _, w := range ws {
		api := slack.New(w.BotToken, slack.OptionAppLevelToken(w.AppToken), slack.OptionAPIURL(r.sim.APIURL()))
		c := socketmode.New(api)
		wg.Go(func() { _ = c.RunContext(cctx) })
		wg.Go(func() {
			for {
				select {
				case <-cctx.Done():
					return
				case ev := <-c.Events:
					if ev.Request != nil && ev.Request.EnvelopeID != "" {
						actx, acancel := context.WithTimeout(cctx, time.Second)
						_ = c.AckCtx(actx, ev.Request.EnvelopeID, nil)
						acancel()
					}
				}
			}
		})
	}
	return stop, r.waitSockets(ctx, ws, 1, 30*time.Second)
}

// bolt plays the ack phases and the pipeline phase against the Bolt for
// JavaScript peer (bench/boltpeer). Missing node or npm skips it.
func (r *runner) bolt(ctx context.Context) {
	skip := func(format string, args ...any) {
		r.rep.BoltSkipped = fmt.Sprintf(format, args...)
		r.log("bolt peer skipped: %s", r.rep.BoltSkipped)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		skip("node is not installed")
		return
	}
	dir := r.o.BoltDir
	if _, err := os.Stat(filepath.Join(dir, "app.js")); err != nil {
		skip("no Bolt peer at %s", dir)
		return
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@slack", "bolt")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			skip("npm is not installed and %s has no node_modules", dir)
			return
		}
		r.log("bolt peer: npm ci in %s", dir)
		nctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		cmd := exec.CommandContext(nctx, npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			skip("npm ci failed: %v: %s", err, truncate(strings.TrimSpace(string(out)), 300))
			return
		}
	}

	ws := r.addWorkspaces(r.o.Workspaces, "bolt")
	type tokens struct {
		App string `json:"app_token"`
		Bot string `json:"bot_token"`
	}
	var list []tokens
	for _, w := range ws {
		list = append(list, tokens{w.AppToken, w.BotToken})
	}
	b, _ := json.Marshal(list)
	file := filepath.Join(r.o.OutDir, "bolt-workspaces.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		skip("write %s: %v", file, err)
		return
	}
	ready := make(chan int, 1)
	lf, err := os.Create(filepath.Join(r.o.OutDir, "bolt.log"))
	if err != nil {
		skip("%v", err)
		return
	}
	defer lf.Close()
	env := append(baseEnv(), "SLACK_API_URL="+r.sim.APIURL(), "BOLT_WORKSPACES="+file, "NODE_ENV=production")
	p, err := startProcess("bolt peer", []string{node, "app.js"}, env, dir, lf, func(line string) {
		if n, ok := strings.CutPrefix(line, "ready "); ok {
			v, _ := strconv.Atoi(n)
			select {
			case ready <- v:
			default:
			}
		}
	})
	if err != nil {
		skip("%v", err)
		return
	}
	defer func() { _ = p.stop(10 * time.Second) }()
	select {
	case <-ready:
	case <-p.done:
		skip("bolt peer exited: %v: %s", p.err, p.tail())
		return
	case <-time.After(90 * time.Second):
		skip("bolt peer not ready after 90 s")
		return
	}
	if err := r.waitSockets(ctx, ws, 1, 30*time.Second); err != nil {
		skip("bolt peer: %v", err)
		return
	}
	tgt := newTarget("bolt", ws)
	r.rep.Ack = append(r.rep.Ack, r.ackPhases(ctx, tgt, false)...)

	res := r.drive(ctx, drive{tgt: tgt, phase: "bolt-pipeline", rate: 2 * r.o.PipelineRate, dur: r.o.Phase, mentionEvery: 1})
	r.waitAnswered(ctx, res.mentions, time.Now().Add(r.o.Drain))
	time.Sleep(100 * time.Millisecond)
	fb, _, _ := r.latencies(res.mentions)
	d := distOf(fb)
	r.rep.BoltFeedback = &d
	r.rep.BoltPeakRSS, _ = procMemory(p.pid())
	r.log("bolt peer: feedback p50 %.1f p99 %.1f ms over %d mentions, peak RSS %.1f MiB", d.P50, d.P99, d.N, r.rep.BoltPeakRSS)
}

// sockets times a fresh daemon opening every socket of every seeded
// workspace (SocketWorkspaces of them, 2 connections each).
func (r *runner) sockets(ctx context.Context) {
	ws := r.allWS // at least SocketWorkspaces: the steps may have needed more
	s := &Sockets{Workspaces: len(ws), Connections: len(ws) * connectionsPerWorkspace}
	r.rep.Sockets = s
	d, err := r.startDaemon(ctx, ws, 120*time.Second)
	if err != nil {
		s.Error = err.Error()
		r.log("sockets: %s", s.Error)
		return
	}
	s.ConnectSeconds = d.Round(10 * time.Millisecond).Seconds()
	time.Sleep(2 * time.Second) // settle: the first reconcile, the hellos
	s.PeakRSS, s.RSS = procMemory(r.daemon.pid())
	r.log("sockets: %d workspaces, %d sockets open in %v; daemon peak RSS %.1f MiB (now %.1f)",
		len(ws), s.Connections, d.Round(time.Millisecond), s.PeakRSS, s.RSS)
	if err := r.daemon.stop(30 * time.Second); err != nil {
		r.log("daemon stop: %v", err)
	}
}
