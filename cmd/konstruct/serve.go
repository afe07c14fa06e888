package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/bot"
	"github.com/konstruct/konstruct/config"
	"github.com/konstruct/konstruct/llm"
	"github.com/konstruct/konstruct/metrics"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/router"
	"github.com/konstruct/konstruct/secret"
	"github.com/konstruct/konstruct/spool"
	"github.com/konstruct/konstruct/store"
	"github.com/konstruct/konstruct/worker"
)

func init() { commands = append(commands, newRunCmd, newGatewayCmd, newWorkerCmd) }

// roles says which halves of the data flow a process runs.
type roles struct{ gateway, worker bool }

func (r roles) String() string {
	switch {
	case r.gateway && r.worker:
		return "run"
	case r.gateway:
		return "gateway"
	default:
		return "worker"
	}
}

func newRunCmd(a *app) *cobra.Command {
	return a.daemonCmd("run", "Run the gateway (Slack sockets, router) and the workers in one process", roles{gateway: true, worker: true})
}

func newGatewayCmd(a *app) *cobra.Command {
	return a.daemonCmd("gateway", "Run only the gateway: Slack sockets, ack, router, enqueue", roles{gateway: true})
}

func newWorkerCmd(a *app) *cobra.Command {
	return a.daemonCmd("worker", "Run only the workers: generate replies from the queue", roles{worker: true})
}

func (a *app) daemonCmd(use, short string, r roles) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long: short + ".\nSIGTERM: stop taking work, finish or hand back in-flight tasks, exit 0 within 30 s.\n" +
			"HTTP on http.addr: /healthz, /readyz, /metrics.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.config(cmd, daemonParts(r)...)
			if err != nil {
				return err
			}
			d, err := newDaemon(cmd.Context(), cfg, r, a.logger, nil)
			if err != nil {
				return err
			}
			return d.Run(cmd.Context())
		},
	}
	cmd.Flags().String("http-addr", "", "listen address of /healthz, /readyz, /metrics (http.addr)")
	return cmd
}

func daemonParts(r roles) []config.Part {
	parts := []config.Part{config.NeedDatabase, config.NeedSecret, config.NeedRedis, config.NeedSlack, config.NeedHTTP, config.NeedWorker}
	if r.worker {
		parts = append(parts, config.NeedLLM)
	}
	return parts
}

// daemonHooks lets the demo and tests reach into a running daemon.
type daemonHooks struct {
	// HTTPClient is used for Slack and the LLM (nil: defaults).
	HTTPClient *http.Client
	// Ready is closed once every part has started.
	Ready chan struct{}
	// ShutdownTimeout bounds how long the workers finish their replies at a
	// stop before handing them back (default 20s; the whole stop fits 25s).
	ShutdownTimeout time.Duration
	// Now, when set, is the clock of the router, the workers and the
	// queue: the UTC days of budgets and notes, the janitor's deadlines.
	Now func() time.Time
}

// daemonT is a running Konstruct process: the pieces wired together.
type daemonT struct {
	cfg     *config.Config
	roles   roles
	logger  *slog.Logger
	hooks   daemonHooks
	metrics *metrics.Metrics
	store   *store.Store
	// policies are the tenants' policies, shared by the router and the
	// workers, dropped when a tenant's changes (LISTEN).
	policies *store.PolicyCache
	queue    *queue.Queue
	web      *bot.Web
	manager  *bot.Manager
	router   *router.Router
	worker   *worker.Server
	spool    *spool.Spool
	intake   *spool.Recorder
	httpLn   net.Listener
	traces   // tracing.go: the traces' provider (nil: off) and the Slack of the router and workers
	// loaded is set once the manager has read the workspaces: until then
	// an empty socket list says nothing and /readyz is not ready.
	loaded atomic.Bool
}

// newDaemon opens the stores and builds every piece; nothing runs yet.
func newDaemon(ctx context.Context, cfg *config.Config, r roles, logger *slog.Logger, hooks *daemonHooks) (_ *daemonT, err error) {
	d := &daemonT{cfg: cfg, roles: r, logger: logger, metrics: metrics.New()}
	if hooks != nil {
		d.hooks = *hooks
	}
	if d.hooks.ShutdownTimeout == 0 {
		d.hooks.ShutdownTimeout = 20 * time.Second
	}
	defer func() {
		if err != nil {
			d.close()
		}
	}()

	box, err := secret.NewBox(cfg.SecretKey, cfg.SecretKeyPrevious...)
	if err != nil {
		return nil, err
	}
	if d.store, err = store.Open(ctx, cfg.Database.URL, box, logger); err != nil {
		return nil, err
	}
	if err := d.store.CheckRole(ctx); err != nil {
		return nil, err
	}
	d.policies = store.NewPolicyCache(d.store, policyTTL, logger)
	qcfg := cfg.Queue()
	qcfg.ShutdownTimeout, qcfg.Logger, qcfg.Now = d.hooks.ShutdownTimeout, logger, d.hooks.Now
	if d.queue, err = queue.Open(qcfg); err != nil {
		return nil, err
	}

	d.web = bot.NewWeb(bot.WebConfig{
		APIURL:     cfg.Slack.APIURL,
		HTTPClient: d.hooks.HTTPClient,
		Source:     d.store.ActiveWorkspaces,
		OnCall: func(method string, _ time.Duration, err error) {
			_, limited := konstruct.RetryAfter(err)
			d.metrics.SlackCall(method, err, limited)
		},
		// A bot token Slack refused for good marks its team alone
		// revoked; the gateways drop it at their next reconcile (the
		// change is NOTIFYed) and the other workspaces go on.
		OnRefused: func(teamID string, err error) {
			logger.Error("slack refused the bot token of a workspace; marking it revoked (`konstruct workspace add` with a new token brings it back)",
				"team_id", teamID, "error", konstruct.Redact(err.Error()))
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := d.store.SetWorkspaceStatus(rctx, teamID, konstruct.WorkspaceRevoked); err != nil {
				logger.Error("mark workspace revoked", "team_id", teamID, "error", err)
			}
		},
	})

	if d.httpLn, err = (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.HTTP.Addr); err != nil {
		return nil, fmt.Errorf("http.addr %s: %w", cfg.HTTP.Addr, err)
	}
	if err := d.startTracing(); err != nil {
		return nil, err
	}

	if r.gateway {
		if d.spool, err = spool.Open(cfg.StateDir, spool.Options{}); err != nil {
			return nil, fmt.Errorf("state_dir: %w (set state_dir or KONSTRUCT_STATE_DIR to a directory this user may write)", err)
		}
		d.intake = spool.NewRecorder(d.queue, d.spool, spool.RecorderConfig{Logger: logger, Metrics: d.metrics})
		d.manager = bot.NewManager(bot.ManagerConfig{
			APIURL:                  cfg.Slack.APIURL,
			ConnectionsPerWorkspace: cfg.Slack.ConnectionsPerWorkspace,
			Source:                  d.store.ActiveWorkspaces,
			OnRevoked: func(ctx context.Context, teamID string) {
				if err := d.store.SetWorkspaceStatus(ctx, teamID, konstruct.WorkspaceRevoked); err != nil {
					logger.Error("mark workspace revoked", "team_id", teamID, "error", err)
				}
			},
			OnWorkspaces: func(ws []konstruct.Workspace) {
				if !d.loaded.Swap(true) && len(ws) == 0 {
					logger.Warn("no workspace to connect yet: add one with `konstruct workspace add --tenant ID|SLUG` (tokens from SLACK_APP_TOKEN and SLACK_BOT_TOKEN); this daemon connects within 10 s, no restart")
				}
				d.web.Set(ws)
				d.router.InvalidateTenants()
			},
			Recorder: d.intake,
			Ignore: func(m konstruct.Message) (string, bool) {
				out, skip := router.Prefilter(m)
				return string(out), skip
			},
			// Several gateways share the apps' sockets within Slack's 10
			// per app (bot/shard.go).
			Leases:     d.queue,
			Logger:     logger,
			Metrics:    d.metrics,
			HTTPClient: d.hooks.HTTPClient,
			Tracer:     d.tracer("bot"),
		})
		consumer, err := consumerName(cfg.StateDir)
		if err != nil {
			return nil, err
		}
		d.router = router.New(router.Config{
			// One consumer of the intake per process, the same after a
			// restart: what it had taken, it finishes first.
			Consumer: consumer,
			Now:      d.hooks.Now,
			Logger:   logger,
			Metrics:  d.metrics,
			Tracer:   d.tracer("router"),
		}, router.Deps{
			Intake:   d.queue,
			Tenants:  d.store,
			Slack:    d.slack,
			Claims:   d.queue,
			Threads:  d.queue,
			Limiter:  d.queue,
			Replies:  d.queue,
			Enqueuer: d.queue,
			Budgets:  d.queue,
			Policies: d.policies,
			Usage:    d.queue,
			Notes:    d.queue,
			Records:  d.store,
			Feedback: d.store,
			Stops:    d.queue,
		})
	}

	if r.worker {
		lcfg := cfg.LLMConfig()
		lcfg.HTTPClient, lcfg.Logger = d.hooks.HTTPClient, logger
		lcfg.OnAttempt = func(at llm.Attempt) {
			d.metrics.LLMAttempt(at.Provider, konstruct.ErrorCode(at.Err), at.TTFT, at.Latency, at.SlotWait)
		}
		lcfg.Gate = d.queue.AcquireLLM
		client, err := llm.New(lcfg)
		if err != nil {
			return nil, err
		}
		wcfg := cfg.WorkerConfig()
		wcfg.Logger, wcfg.Metrics, wcfg.Now = logger, d.metrics, d.hooks.Now
		wcfg.Tracer = d.tracer("worker")
		d.worker = worker.New(wcfg, worker.Deps{
			Agents:   d.store,
			Records:  d.store,
			Slack:    d.slack,
			LLM:      client,
			Tasks:    d.queue,
			States:   d.queue,
			Budgets:  d.queue,
			Policies: d.policies,
			Usage:    d.queue,
			Stops:    d.queue,
		})
	}
	return d, nil
}

// policyTTL bounds how long a process serves a tenant's policy it read
// before, should a change's notification be lost: well inside the 10 s a
// change has to reach running daemons.
const policyTTL = 5 * time.Second

// consumerName names this process among the intake's readers: the host
// and an id kept in its state directory. The spool holds that directory
// for one process at a time, so the name is this process's alone — on
// this machine and any other, whatever their hostnames and ports — and the
// same after a restart, which then finishes first what it had taken.
func consumerName(stateDir string) (string, error) {
	path := filepath.Join(stateDir, "instance-id")
	b, err := os.ReadFile(path)
	id := strings.TrimSpace(string(b))
	if errors.Is(err, os.ErrNotExist) || (err == nil && id == "") {
		var buf [6]byte
		_, _ = rand.Read(buf[:])
		id = hex.EncodeToString(buf[:])
		if err = os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("state_dir: %w", err)
		}
	} else if err != nil {
		return "", fmt.Errorf("state_dir: %w", err)
	}
	host, _ := os.Hostname()
	return cmp.Or(host, "konstruct") + ":" + id, nil
}

// Run runs every piece until ctx ends, then stops them in order: sockets
// first (Slack routes new events elsewhere), then the router drains what was
// acked, then the workers finish or hand back their tasks, then HTTP.
func (d *daemonT) Run(ctx context.Context) error {
	defer d.close()
	log := d.logger.With("role", d.roles.String())

	srv := &http.Server{Handler: d.httpHandler(), ReadHeaderTimeout: 5 * time.Second}
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Serve(d.httpLn) }()

	// Every piece stops when runCtx ends (a signal, or the HTTP server
	// failing), all at once, each within its own bound: the gateway takes
	// no new envelopes and acks what it recorded (≤ 3 s), the router
	// finishes the records it took (≤ 5 s; the rest stays in the intake),
	// the workers finish their replies or hand them back (≤ the shutdown
	// timeout, 20 s). Together they fit systemd's TimeoutStopSec.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var g errgroup.Group
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()

	var parts errgroup.Group
	if d.manager != nil {
		parts.Go(func() error { return d.manager.Run(runCtx) })
		parts.Go(func() error { return d.router.Run(runCtx) })
		// The spool's replay outlives the sockets: what they recorded last
		// may still be on disk.
		g.Go(func() error { return d.intake.Run(bg) })
	}
	// Changes made with the CLI reach this process within seconds:
	// workspaces (the gateway's sockets) and tenants' policies.
	listen := map[string]func(string){store.PoliciesChannel: d.policies.Invalidate}
	if d.manager != nil {
		listen[store.WorkspacesChannel] = func(string) { d.manager.Trigger() }
	}
	g.Go(func() error {
		err := d.store.Listen(runCtx, listen)
		if err != nil && runCtx.Err() == nil {
			log.Warn("database notifications stopped; relying on periodic reconciles and cache expiry", "error", err)
		}
		return nil
	})
	if d.worker != nil {
		parts.Go(func() error { return d.worker.Run(runCtx) })
		g.Go(func() error { d.watchQueue(bg); return nil })
	}
	g.Go(func() error { d.watchdog(bg); return nil })
	g.Go(func() error { d.observe(bg); return nil })

	if d.hooks.Ready != nil {
		close(d.hooks.Ready)
	}
	_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
	log.Info("konstruct started", "http_addr", d.httpLn.Addr().String(), "version", version)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-httpDone:
		runErr = fmt.Errorf("http server: %w", err)
	}
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	log.Info("konstruct stopping")
	stopRun()

	stopped := make(chan error, 1)
	go func() { stopped <- parts.Wait() }()
	select {
	case err := <-stopped:
		if err != nil {
			log.Error("stopped with an error", "error", err)
		}
	case <-time.After(d.hooks.ShutdownTimeout + 5*time.Second):
		log.Error("graceful stop took too long; exiting")
	}
	stopBG()
	_ = g.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	traced := d.stopTracing(sctx) // the last spans, within the same 2 s
	_ = srv.Shutdown(sctx)
	<-traced
	log.Info("konstruct stopped")
	return runErr
}

func (d *daemonT) close() {
	d.closeTracing()
	if d.httpLn != nil {
		_ = d.httpLn.Close()
	}
	if d.queue != nil {
		_ = d.queue.Close()
	}
	if d.spool != nil {
		_ = d.spool.Close()
	}
	if d.store != nil {
		d.store.Close()
	}
}

// readiness is the body of /readyz.
type readiness struct {
	Ready      bool              `json:"ready"`
	Postgres   string            `json:"postgres"`
	Redis      string            `json:"redis"`
	Gateway    string            `json:"gateway,omitempty"` // "starting" until the workspaces are loaded
	Workspaces []bot.SocketState `json:"workspaces,omitempty"`
}

func (d *daemonT) readiness(ctx context.Context) readiness {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r := readiness{Ready: true, Postgres: "ok", Redis: "ok"}
	if err := d.store.Ping(ctx); err != nil {
		r.Ready, r.Postgres = false, "unreachable"
	}
	if err := d.queue.Ping(ctx); err != nil {
		r.Ready, r.Redis = false, "unreachable"
	}
	if d.manager != nil {
		if !d.loaded.Load() {
			r.Ready, r.Gateway = false, "starting"
		}
		r.Workspaces = d.manager.States()
		for _, s := range r.Workspaces {
			// A workspace skipped for a problem (tokens that do not
			// decrypt) is reported here, not made this process's
			// unreadiness: the others are served.
			if s.Connected == 0 && !s.Skipped {
				r.Ready = false
			}
		}
	}
	return r
}

func (d *daemonT) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rd := d.readiness(r.Context())
		w.Header().Set("Content-Type", "application/json")
		if !rd.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(rd)
	})
	mux.Handle("GET /metrics", d.metrics.Handler())
	return mux
}

// watchdog pings systemd's watchdog from the daemon's own loop: the ping
// means "this process is alive and scheduling", nothing more. Postgres and
// Redis health belong to /readyz: an outage of either must never get the
// daemon killed and restarted in a loop — the intake spool and the
// router's retries carry the work through it.
func (d *daemonT) watchdog(ctx context.Context) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return
	}
	t := time.NewTicker(interval / 3)
	defer t.Stop()
	for {
		_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchQueue publishes the reply queue's size by state.
func (d *daemonT) watchQueue(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			st, err := d.queue.Stats(ctx)
			if err != nil {
				continue
			}
			for state, n := range map[string]int{"pending": st.Pending, "active": st.Active, "scheduled": st.Scheduled, "retry": st.Retry, "archived": st.Archived} {
				d.metrics.QueueSize.WithLabelValues(state).Set(float64(n))
			}
		}
	}
}
