package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/konstruct/konstruct/bench"
)

func init() {
	commands = append(commands, newBenchCmd)
	startBenchPprof()
}

// benchPprofEnv, set by `konstruct bench` on the daemon it measures only,
// serves net/http/pprof on that loopback address. Nothing else turns it on.
const benchPprofEnv = "KONSTRUCT_BENCH_PPROF"

func startBenchPprof() {
	addr := os.Getenv(benchPprofEnv)
	if addr == "" {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(os.Stderr, "%s=%s ignored: must be a loopback host:port\n", benchPprofEnv, addr)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ListenAndServe() }()
}

func newBenchCmd(a *app) *cobra.Command {
	var (
		o        bench.Options
		rates    string
		steps    string
		jsonPath string
		chaos    bool
		co       bench.ChaosOptions
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the ack path, the pipeline and socket scale against the Slack emulator",
		Long: "Runs this binary as users run it — `konstruct run` configured by KONSTRUCT_* variables, seeded with\n" +
			"`tenant create`, `agent set` and `workspace add` — against an in-process Slack emulator and a fake\n" +
			"OpenAI-compatible LLM, with a private PostgreSQL database and Redis prefix (both removed at the end).\n" +
			"Reports ack latency at several rates, time to visible feedback, pipeline overhead, the highest\n" +
			"sustained answered rate, socket scale and peak RSS, beside a bare slack-go client and a Bolt for\n" +
			"JavaScript app under the same load. Then, against an emulator that enforces Slack's rate limits and a\n" +
			"daemon on its default Slack budgets: a realistic load (2,000 events/s over 250 workspaces, 5% mentions),\n" +
			"a burst of 60 mentions in 10 s into one workspace, the same burst against a gateway and two workers\n" +
			"sharing its budget, and noisy neighbours (quiet tenants alone, then beside two tenants flooding a slow,\n" +
			"scarce model). Exits non-zero if any answer was duplicated or lost.\n\n" +
			"--chaos runs the chaos run instead: a realistic mix (20 workspaces, 100 events/s, one post in ten a\n" +
			"mention) through Slack's redeliveries, refresh disconnects and cut sockets, and a 30 s outage of a\n" +
			"private redis-server (AOF) with a SIGKILL of the daemon inside it and a restart. Exits non-zero unless\n" +
			"every mention was answered exactly once, no placeholder was left and no chatter was answered.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.Rates, err = intList(rates); err != nil {
				return fmt.Errorf("bench: --rates: %w", err)
			}
			if o.Steps, err = intList(steps); err != nil {
				return fmt.Errorf("bench: --steps: %w", err)
			}
			if o.Binary, err = os.Executable(); err != nil {
				return fmt.Errorf("bench: find this binary: %w", err)
			}
			if chaos {
				co.Binary, co.AdminURL, co.OutDir, co.Progress = o.Binary, o.AdminURL, o.OutDir, a.stderr
				co.Workspaces, co.LLMFirstToken, co.LLMTokenDelay = o.Workspaces, o.LLMFirstToken, o.LLMTokenDelay
				rep, err := bench.Chaos(cmd.Context(), co, a.stdout)
				if jsonPath != "" && !rep.Started.IsZero() {
					if werr := writeJSON(jsonPath, rep); werr != nil {
						fmt.Fprintln(a.stderr, "bench: write", jsonPath+":", werr)
					}
				}
				if errors.Is(err, bench.ErrIntegrity) {
					return fmt.Errorf("bench --chaos FAILED: %d of %d mentions answered once, %d duplicates, %d lost, %d stuck placeholders (see above)",
						rep.AnsweredOnce, rep.Mentions, rep.Duplicates, rep.Lost, rep.Stuck)
				}
				return err
			}
			if o.BoltDir == "" {
				// Next to the source when run from the repository.
				if _, err := os.Stat(filepath.Join("bench", "boltpeer", "app.js")); err == nil {
					o.BoltDir, _ = filepath.Abs(filepath.Join("bench", "boltpeer"))
				}
			}
			o.Progress = a.stderr
			rep, err := bench.Run(cmd.Context(), o, a.stdout)
			if jsonPath != "" && !rep.Started.IsZero() {
				if werr := writeJSON(jsonPath, rep); werr != nil {
					fmt.Fprintln(a.stderr, "bench: write", jsonPath+":", werr)
				}
			}
			if errors.Is(err, bench.ErrIntegrity) {
				return fmt.Errorf("bench FAILED: %d duplicate and %d lost answers (see above)", rep.Duplicates, rep.Lost)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.Quick, "quick", false, "small phases: a run of well under a minute")
	f.BoolVar(&chaos, "chaos", false, "run the chaos run (Slack faults, a Redis outage with a SIGKILL of the daemon) instead of the benchmark")
	f.IntVar(&co.Rate, "chaos-rate", 0, "--chaos: envelopes/s over all workspaces (default 100)")
	f.DurationVar(&co.Outage, "chaos-outage", 0, "--chaos: length of the Redis outage (default 30s; the daemon is killed halfway)")
	f.BoolVar(&o.SkipDurable, "skip-durable", false, "skip the durable-ack phase (a daemon on a private redis-server, Redis answering and stopped)")
	f.BoolVar(&o.SkipLimits, "skip-limits", false, "skip the Slack-limits phases (realistic, burst, two workers, noisy neighbours)")
	f.BoolVar(&o.LimitsOnly, "limits", false, "run only the Slack-limits phases")
	f.IntVar(&o.Limits.RealisticWorkspaces, "realistic-workspaces", 0, "workspaces of the realistic phase (default 250)")
	f.IntVar(&o.Limits.RealisticRate, "realistic-rate", 0, "envelopes/s of the realistic phase (default 2000)")
	f.DurationVar(&o.Limits.RealisticPhase, "realistic-phase", 0, "length of the realistic phase (default 10s)")
	f.IntVar(&o.Limits.BurstMentions, "burst-mentions", 0, "mentions of the burst into one workspace (default 60)")
	f.DurationVar(&o.Limits.BurstWindow, "burst-window", 0, "the burst's length (default 10s)")
	f.BoolVar(&o.Limits.SkipShared, "skip-shared", false, "skip the two-worker phase (gateway + 2 workers sharing a workspace's budget)")
	f.BoolVar(&o.Limits.SkipNoisy, "skip-noisy", false, "skip the noisy-neighbour phase")
	f.IntVar(&o.Limits.NoisySlots, "noisy-slots", 0, "llm.max_concurrency of the noisy-neighbour daemon (default 16)")
	f.IntVar(&o.Limits.NoisyWorkers, "noisy-workers", 0, "worker.concurrency of the noisy-neighbour daemon (default: --worker-concurrency)")
	f.DurationVar(&o.Limits.NoisyAlone, "noisy-alone", 0, "how long the quiet tenants ask alone (default 15s)")
	f.DurationVar(&o.Limits.NoisyFlood, "noisy-flood", 0, "how long the two tenants flood (default 15s)")
	f.DurationVar(&o.Limits.NoisyFloodLLM, "noisy-flood-llm", 0, "the flooding tenants' model time (default 5s)")
	f.IntVar(&o.Workspaces, "workspaces", 0, "workspaces carrying the load (default 50; --quick 10; --chaos 20)")
	f.StringVar(&rates, "rates", "", "ack phases in envelopes/s, comma-separated (default 500,2000,5000)")
	f.DurationVar(&o.Phase, "phase", 0, "length of each ack and pipeline phase (default 5s)")
	f.Float64Var(&o.MentionShare, "mention-share", 0, "share of posts in the ack phases that mention the bot (default 0.02)")
	f.IntVar(&o.PipelineRate, "pipeline-rate", 0, "mentions/s of the feedback and overhead phase (default 50)")
	f.StringVar(&steps, "steps", "", "mention rates tried for the sustained answered rate (default 50,100,200,400,800,1600)")
	f.DurationVar(&o.StepPhase, "step-phase", 0, "length of each step (default 5s)")
	f.DurationVar(&o.LLMFirstToken, "llm-delay", 0, "the fake LLM's time to first token (default 200ms)")
	f.DurationVar(&o.LLMTokenDelay, "llm-token-delay", 0, "the fake LLM's delay between tokens (default 5ms)")
	f.IntVar(&o.WorkerConcurrency, "worker-concurrency", 0, "worker.concurrency of the measured daemon (default 1000)")
	f.IntVar(&o.SocketWorkspaces, "socket-workspaces", 0, "workspaces in the sockets phase, 2 connections each (default 1000)")
	f.BoolVar(&o.SkipSockets, "skip-sockets", false, "skip the sockets phase")
	f.BoolVar(&o.SkipBolt, "skip-bolt", false, "skip the Bolt for JavaScript peer")
	f.StringVar(&o.BoltDir, "bolt-dir", "", "directory of the Bolt peer (default: ./bench/boltpeer)")
	f.BoolVar(&o.Profile, "profile", true, "CPU-profile the daemon during the 2,000/s phase and a pipeline step")
	f.StringVar(&o.OutDir, "out", "", "directory for logs and profiles (default: a new temporary directory)")
	f.StringVar(&o.AdminURL, "admin-url", "", "PostgreSQL URL allowed to create databases and roles (default postgres://postgres@127.0.0.1:5432/postgres)")
	f.StringVar(&o.RedisURL, "redis-url", "", "Redis URL (default redis://127.0.0.1:6379/0); keys get a private prefix")
	f.StringVar(&jsonPath, "json", "", "also write the report as JSON to this file")
	return cmd
}

func intList(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for p := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", p)
		}
		out = append(out, n)
	}
	return out, nil
}

func writeJSON(path string, rep any) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
