// Package bench measures Konstruct as its users run it: the real binary, a
// private PostgreSQL database and Redis prefix, the Slack emulator (slacksim)
// and an OpenAI-compatible fake LLM with a fixed delay, both in this process.
//
// Run seeds tenants, agents and workspaces with the real CLI, starts
// `konstruct run` as a child process configured only by KONSTRUCT_*
// variables, drives Slack traffic at fixed rates and reads the results where
// a user would see them: acks on the sockets, messages in the threads, the
// daemon's resident memory in /proc. The same load is then played against
// two references on the same emulator: a bare slack-go socketmode client that
// only acks, and a minimal Bolt for JavaScript app (bench/boltpeer).
package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// Options configures a run. Zero fields take the defaults of a full run;
// Quick shrinks them to a run of well under a minute.
type Options struct {
	// Binary is the konstruct executable to measure (required).
	Binary string
	// AdminURL may create databases and roles (the run's database is dropped at the end).
	AdminURL string
	// RedisURL is the Redis the daemon uses; the run's keys get a private prefix, deleted at the end.
	RedisURL string

	// Workspaces carry the load (default 50), Tenants/5 of them each.
	Workspaces int
	// Rates are the ack phases, in envelopes per second (default 500, 2000, 5000).
	Rates []int
	// Phase is how long each ack phase lasts (default 5 s).
	Phase time.Duration
	// MentionShare is the share of posts in the ack phases that mention the
	// bot and get an answer (default 0.02); the rest is channel chatter the
	// bot reads, acks and ignores.
	MentionShare float64
	// PipelineRate is the mention rate of the feedback/overhead phase
	// (default 50/s), spread over the step workspaces so that no workspace
	// nears the worker's chat.update budget.
	PipelineRate int
	// StepWorkspaces carry the steps (default 1000): Slack budgets
	// chat.update per workspace (the worker keeps to 40/min), so the
	// answered rate of a few workspaces is Slack's limit, not Konstruct's.
	StepWorkspaces int
	// Steps are the mention rates tried for the highest sustained answered
	// rate (default 50 … 1600/s); stepping stops at the first that fails.
	Steps []int
	// StepPhase is how long each step lasts (default 5 s).
	StepPhase time.Duration
	// Drain bounds the wait for answers after a phase (default 30 s).
	Drain time.Duration

	// LLMFirstToken and LLMTokenDelay shape the fake LLM's answer (default 200 ms, 5 ms).
	LLMFirstToken time.Duration
	LLMTokenDelay time.Duration
	// AnswerWords is the length of every answer (default 20 words).
	AnswerWords int
	// WorkerConcurrency is worker.concurrency (default 1000: the fake LLM never limits).
	WorkerConcurrency int

	// DurableWorkspaces, DurableRate and DurableMentionShare shape the
	// durable-ack phase (default 250 workspaces, 2,000 envelopes/s, 5 %
	// mentions): a daemon on a Redis of its own (a private redis-server with
	// AOF; the other phases keep the shared one) is measured with Redis
	// answering (appendfsync everysec, then always) and with Redis stopped,
	// when the intake's records go to the disk spool. SkipDurable skips it;
	// so does a machine without redis-server.
	DurableWorkspaces   int
	DurableRate         int
	DurableMentionShare float64
	SkipDurable         bool

	// Limits shapes the Slack-limits phases (issue 13): a daemon of their
	// own against a slacksim that enforces Slack's tiers, on the daemon's
	// default Slack budgets. SkipLimits leaves them out; LimitsOnly runs
	// them alone.
	Limits     LimitsOptions
	SkipLimits bool
	LimitsOnly bool

	// SocketWorkspaces is the size of the sockets phase (default 1000, 2 connections each).
	SocketWorkspaces int
	SkipSockets      bool
	SkipBolt         bool
	// BoltDir holds the Bolt peer (default: bench/boltpeer next to the source).
	BoltDir string
	// Profile takes a CPU profile of the daemon during the 2,000/s phase (or the largest below it).
	Profile bool
	// OutDir receives logs and profiles (default: a temporary directory, kept).
	OutDir string
	// Progress receives one line per step (default: discard).
	Progress io.Writer
	// Quick picks small phases: seconds instead of minutes.
	Quick bool
}

func (o *Options) defaults() {
	if o.Quick {
		o.Workspaces = cmp.Or(o.Workspaces, 10)
		if o.Rates == nil {
			o.Rates = []int{200, 1000}
		}
		o.Phase = cmp.Or(o.Phase, 1500*time.Millisecond)
		o.MentionShare = cmp.Or(o.MentionShare, 0.05)
		o.PipelineRate = cmp.Or(o.PipelineRate, 50)
		if o.Steps == nil {
			o.Steps = []int{20, 50}
		}
		o.StepPhase = cmp.Or(o.StepPhase, 1500*time.Millisecond)
		o.Drain = cmp.Or(o.Drain, 15*time.Second)
		o.SocketWorkspaces = cmp.Or(o.SocketWorkspaces, 40)
		o.DurableWorkspaces = cmp.Or(o.DurableWorkspaces, 20)
		o.DurableRate = cmp.Or(o.DurableRate, 500)
		o.StepWorkspaces = cmp.Or(o.StepWorkspaces, 40)
		o.LLMFirstToken = cmp.Or(o.LLMFirstToken, 50*time.Millisecond)
		o.LLMTokenDelay = cmp.Or(o.LLMTokenDelay, time.Millisecond)
	}
	o.Limits.defaults(o.Quick)
	o.AdminURL = cmp.Or(o.AdminURL, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	o.RedisURL = cmp.Or(o.RedisURL, "redis://127.0.0.1:6379/0")
	o.Workspaces = cmp.Or(o.Workspaces, 50)
	if o.Rates == nil {
		o.Rates = []int{500, 2000, 5000}
	}
	o.Phase = cmp.Or(o.Phase, 5*time.Second)
	o.MentionShare = cmp.Or(o.MentionShare, 0.02)
	o.PipelineRate = cmp.Or(o.PipelineRate, 50)
	if o.Steps == nil {
		o.Steps = []int{50, 100, 200, 400, 800, 1600}
	}
	o.StepPhase = cmp.Or(o.StepPhase, 5*time.Second)
	o.Drain = cmp.Or(o.Drain, 30*time.Second)
	o.LLMFirstToken = cmp.Or(o.LLMFirstToken, 200*time.Millisecond)
	o.LLMTokenDelay = cmp.Or(o.LLMTokenDelay, 5*time.Millisecond)
	o.AnswerWords = cmp.Or(o.AnswerWords, 20)
	o.WorkerConcurrency = cmp.Or(o.WorkerConcurrency, 1000)
	o.SocketWorkspaces = max(cmp.Or(o.SocketWorkspaces, 1000), o.Workspaces)
	o.DurableWorkspaces = cmp.Or(o.DurableWorkspaces, 250)
	o.DurableRate = cmp.Or(o.DurableRate, 2000)
	o.DurableMentionShare = cmp.Or(o.DurableMentionShare, 0.05)
	o.StepWorkspaces = max(cmp.Or(o.StepWorkspaces, 1000), o.Workspaces)
	if o.BoltDir == "" {
		_, file, _, _ := runtime.Caller(0)
		o.BoltDir = filepath.Join(filepath.Dir(file), "boltpeer")
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// Report is everything a run measured. Latencies are in milliseconds.
type Report struct {
	Started time.Time `json:"started"`
	Machine Machine   `json:"machine"`
	Setup   Setup     `json:"setup"`

	// Ack has one row per target and rate: konstruct, slack-go (acks only), bolt.
	Ack []AckRow `json:"ack"`
	// Feedback is event → first bot write in the thread; Overhead is event →
	// final answer minus the fake LLM's own time (konstruct, pipeline phase).
	Feedback Dist `json:"feedback"`
	Overhead Dist `json:"overhead"`
	// BoltFeedback is event → Bolt's reply in the thread, pipeline phase.
	BoltFeedback *Dist `json:"bolt_feedback,omitempty"`
	// Steps try rising answered rates; Sustained is the highest answered
	// rate (per second) of a step that kept up with ack p99 ≤ 5 ms.
	Steps     []StepRow `json:"steps"`
	Sustained float64   `json:"sustained_answers_per_s"`

	Mentions   int `json:"mentions"`
	Duplicates int `json:"duplicates"`
	Lost       int `json:"lost"`
	// LostDetail lists a few lost threads and what they show.
	LostDetail []string `json:"lost_detail,omitempty"`

	// DaemonPeakRSS is the load daemon's VmHWM after the load phases (MiB).
	DaemonPeakRSS float64 `json:"daemon_peak_rss_mib"`
	// DaemonCPU is the CPU time the load daemon used over the whole run.
	DaemonCPUSeconds float64  `json:"daemon_cpu_s"`
	Sockets          *Sockets `json:"sockets,omitempty"`
	// Durable is the ack latency with the intake's durable write, in Redis
	// and in the spool (the durable-ack phase).
	Durable *Durable `json:"durable,omitempty"`
	// Limits is the Slack-limits phases: realistic, burst, two workers
	// sharing a budget, noisy neighbours.
	Limits *Limits `json:"limits,omitempty"`
	// LimitsOnly: only the Slack-limits phases ran (Options.LimitsOnly).
	LimitsOnly bool `json:"limits_only,omitempty"`

	RedisPing      Dist    `json:"redis_ping"`
	BoltSkipped    string  `json:"bolt_skipped,omitempty"`
	BoltPeakRSS    float64 `json:"bolt_peak_rss_mib,omitempty"`
	Profile        string  `json:"profile,omitempty"`
	ProfileTop     string  `json:"-"`
	OutDir         string  `json:"out_dir"`
	ElapsedSeconds float64 `json:"elapsed_s"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int    `json:"cpus"`
	MemTotal  string `json:"mem_total"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
}

// Setup records the load's shape.
type Setup struct {
	Workspaces int `json:"workspaces"`
	Tenants    int `json:"tenants"`
	// Seeded counts every workspace registered with the CLI (load, steps, sockets).
	Seeded         int     `json:"seeded"`
	StepWorkspaces int     `json:"step_workspaces"`
	PhaseSeconds   float64 `json:"phase_s"`
	MentionShare   float64 `json:"mention_share"`
	LLMMillis      float64 `json:"llm_ms"` // the fake's own time per answer
	SeedSeconds    float64 `json:"seed_s"`
}

// AckRow is one ack phase against one target.
type AckRow struct {
	Target       string  `json:"target"`
	Rate         int     `json:"rate"`         // envelopes/s asked for
	Actual       float64 `json:"actual"`       // envelopes/s sent
	Routed       float64 `json:"routed"`       // router decisions/s (konstruct only, from /metrics)
	Sent         int     `json:"sent"`         // envelopes sent
	Acked        int     `json:"acked"`        // envelopes acked
	Redeliveries int     `json:"redeliveries"` // envelopes redelivered for a missing ack
	Ack          Dist    `json:"ack"`
}

// StepRow is one step of the sustained-rate search.
type StepRow struct {
	Rate     int     `json:"rate"` // mentions/s asked for
	Mentions int     `json:"mentions"`
	Answered int     `json:"answered"`
	PerSec   float64 `json:"answered_per_s"`
	Ack      Dist    `json:"ack"`
	Feedback Dist    `json:"feedback"`
	Overhead Dist    `json:"overhead"`
	OK       bool    `json:"ok"`
	Why      string  `json:"why,omitempty"`
}

// Durable is the durable-ack phase: one row per path the intake's record
// takes — Redis under each appendfsync policy, and the disk spool while
// Redis is stopped — at the same rate over the same workspaces.
type Durable struct {
	Workspaces   int          `json:"workspaces"`
	MentionShare float64      `json:"mention_share"`
	Rows         []DurableRow `json:"rows"`
	// SpoolPeak is the most records the spool held (the daemon's konstruct_spool_records).
	SpoolPeak int `json:"spool_peak"`
	// Spooled is how many records went to the spool (konstruct_intake_recorded_total{sink="spool"}).
	Spooled int `json:"spooled"`
	// ReplaySeconds is Redis back → the spool empty; AnsweredSeconds is
	// Redis back → every mention of the spool phase answered.
	ReplaySeconds   float64 `json:"replay_s"`
	AnsweredSeconds float64 `json:"answered_s"`
	// Skipped says why the phase did not run; Error why it stopped.
	Skipped string `json:"skipped,omitempty"`
	Error   string `json:"error,omitempty"`
}

// DurableRow is one path of the durable-ack phase.
type DurableRow struct {
	// Path is "redis (appendfsync everysec)", "redis (appendfsync always)" or "spool (Redis stopped)".
	Path string `json:"path"`
	AckRow
}

// Database is a PostgreSQL database made for a run elsewhere (tests use
// testenv.NewPG): the run migrates it with the CLI and leaves it in place.
type Database struct {
	OwnerURL   string // konstruct migrate
	RuntimeURL string // the daemon and the other commands
}

// Sockets is the connection-scale phase.
type Sockets struct {
	Workspaces     int     `json:"workspaces"`
	Connections    int     `json:"connections"`
	ConnectSeconds float64 `json:"connect_s"`
	PeakRSS        float64 `json:"peak_rss_mib"`
	RSS            float64 `json:"rss_mib"`
	Error          string  `json:"error,omitempty"`
}

// ErrIntegrity is returned (wrapped) when a run saw duplicate or lost answers.
var ErrIntegrity = errors.New("duplicate or lost answers")

// Run runs the whole benchmark and writes the table and the JSON line to out.
// It returns an error wrapping ErrIntegrity when any answer was duplicated
// or lost, after printing the report.
func Run(ctx context.Context, o Options, out io.Writer) (Report, error) {
	o.defaults()
	if o.Binary == "" {
		return Report{}, errors.New("bench: Options.Binary is required")
	}
	if o.OutDir == "" {
		dir, err := os.MkdirTemp("", "konstruct-bench-")
		if err != nil {
			return Report{}, err
		}
		o.OutDir = dir
	} else if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return Report{}, err
	}
	r := newRunner(o)
	rep, err := r.run(ctx)
	rep.ElapsedSeconds = time.Since(rep.Started).Round(100 * time.Millisecond).Seconds()
	if err != nil {
		return rep, err
	}
	writeReport(out, rep)
	if rep.Duplicates > 0 || rep.Lost > 0 {
		return rep, fmt.Errorf("bench: %d duplicate and %d lost answers: %w", rep.Duplicates, rep.Lost, ErrIntegrity)
	}
	if l := rep.Limits; l != nil && (l.Duplicates > 0 || l.Lost > 0) {
		return rep, fmt.Errorf("bench: Slack-limits phases: %d duplicate and %d lost answers: %w", l.Duplicates, l.Lost, ErrIntegrity)
	}
	return rep, nil
}
