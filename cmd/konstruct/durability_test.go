package main

// Process-level durability tests: the real binary as a child process, as
// systemd runs it, against a private Postgres database, a private
// redis-server the test may kill (internal/testenv), and slacksim and the
// fake LLM in this process. They show what holds when the process dies or
// Redis goes away — what in-process tests cannot: the process really dies.

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/konstruct/konstruct/bench"
	"github.com/konstruct/konstruct/internal/testenv"
)

// konstructBinary is the binary the process-level tests run: the one named
// by $KONSTRUCT_TEST_BINARY (an older build, to see a test fail without the
// behaviour it checks), else this package built into t.TempDir() — without
// the race detector, to keep the child fast.
func konstructBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("KONSTRUCT_TEST_BINARY"); b != "" {
		return b
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Skip("the go tool is not available to build the binary")
		}
	}
	out := filepath.Join(t.TempDir(), "konstruct")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, goBin, "build", "-o", out, ".")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// testRedis lets a chaos run stop and start a test's private redis-server.
type testRedis struct{ s *testenv.RedisServer }

func (r testRedis) URL() string  { return r.s.URL }
func (r testRedis) Stop() error  { r.s.Stop(); return nil }
func (r testRedis) Start() error { r.s.Start(); return nil }

// TestKilledDuringRedisOutageAnswersEveryMentionOnce: `konstruct run` under
// a steady load of mentions and channel chatter over a few workspaces;
// Redis is killed; mentions keep coming (the daemon acks them from its disk
// spool); the daemon is SIGKILLed while Redis is still down; Redis comes
// back with what it persisted, then the daemon, on the same state_dir.
// Every mention is then answered exactly once in its thread, by the bot,
// nothing is left on "Thinking...", no chatter is answered, and every
// envelope Slack delivered was acked — nothing acked was lost.
func TestKilledDuringRedisOutageAnswersEveryMentionOnce(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs the binary through a Redis outage and a SIGKILL (~40 s)")
	}
	srv := testenv.StartRedisServer(t)
	pg := testenv.NewPG(t)
	bin := konstructBinary(t)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const (
		warmup = 3 * time.Second
		outage = 9 * time.Second
		killAt = 7 * time.Second // into the outage
	)
	var out, progress bytes.Buffer
	rep, err := bench.Chaos(ctx, bench.ChaosOptions{
		Binary:   bin,
		Database: &bench.Database{OwnerURL: pg.OwnerURL, RuntimeURL: pg.RuntimeURL},
		Redis:    testRedis{srv},
		// ~4 mentions/s and 8 chatter posts/s over 4 workspaces.
		Workspaces: 4, Rate: 16, MentionEvery: 3,
		Warmup: warmup, Outage: outage, KillAt: killAt,
		// No reply mid-answer when Redis dies: the janitor would finish it
		// only a minute after Redis is back (the chaos run covers that).
		QuietBeforeOutage: time.Second,
		// Started again once Redis is back (the restart falls at the outage's end).
		RestartAfter: outage - killAt,
		After:        3 * time.Second,
		NoFaults:     true,
		// A reply whose worker died mid-answer is taken over after its
		// heartbeat deadline (1 min) and the janitor's sweep (15 s).
		Drain:         2 * time.Minute,
		LLMFirstToken: 20 * time.Millisecond, LLMTokenDelay: 2 * time.Millisecond,
		OutDir:   t.TempDir(),
		Progress: &progress,
	}, &out)
	t.Logf("\n%s%s", progress.String(), out.String())
	if err != nil && !errors.Is(err, bench.ErrIntegrity) {
		t.Fatal(err)
	}

	if rep.Mentions < 20 || rep.Chatter < 20 {
		t.Fatalf("the load made %d mentions and %d chatter posts; want at least 20 of each", rep.Mentions, rep.Chatter)
	}
	if rep.AnsweredOnce != rep.Mentions || rep.Duplicates != 0 || rep.Lost != 0 {
		t.Errorf("of %d mentions, %d answered exactly once, %d with more than one bot message, %d without a final answer (%d with an error text instead)",
			rep.Mentions, rep.AnsweredOnce, rep.Duplicates, rep.Lost, rep.ErrorAnswers)
	}
	if rep.Stuck != 0 {
		t.Errorf("%d bot messages left on the placeholder or an unfinished stream", rep.Stuck)
	}
	if rep.ChatterAnswered != 0 {
		t.Errorf("%d of %d chatter posts got a bot message", rep.ChatterAnswered, rep.Chatter)
	}
	if rep.Unacked != 0 {
		t.Errorf("%d of %d envelopes were never acked (Slack gave up on them)", rep.Unacked, rep.Envelopes)
	}
	for _, f := range rep.Failures {
		t.Log(f)
	}
	if rep.Kills != 1 || rep.Restarts < 1 {
		t.Errorf("daemon killed %d times, restarted %d times: the scenario did not run", rep.Kills, rep.Restarts)
	}

	// During the outage the daemon kept acking, from the spool (not from
	// memory: Redis was down).
	if rep.Spooled == 0 {
		t.Errorf("no intake record went to the spool during the outage (konstruct_intake_recorded_total{sink=\"spool\"} = 0)")
	}
	tl := rep.Timeline
	delivered, acked, late := 0, 0, 0
	var worst time.Duration
	for _, st := range rep.Deliveries {
		if st.Sent.Before(tl.RedisDown) || !st.Sent.Before(tl.Kill.Add(-slackAckTimeout)) {
			continue
		}
		delivered++
		if !st.Acked.IsZero() && st.Acked.Before(tl.Kill) {
			acked++
		}
		// Late: acked after Slack's timeout, by this daemon or, redelivered,
		// by the next one.
		if d := st.Acked.Sub(st.Sent); st.Acked.IsZero() || d > slackAckTimeout {
			late++
			worst = max(worst, d)
		}
	}
	if delivered == 0 || acked == 0 {
		t.Errorf("of %d envelopes delivered during the outage, the daemon acked %d before it was killed: it stopped acking", delivered, acked)
	}
	// Acked within Slack's 3 s too, so that Slack does not redeliver them.
	if late > 0 {
		t.Errorf("of %d envelopes delivered during the outage, %d were acked after Slack's %v (up to %v): Slack redelivered them",
			delivered, late, slackAckTimeout, worst.Round(time.Millisecond))
	}
}

// slackAckTimeout is how long Slack (and slacksim) waits for an ack before
// it redelivers an envelope.
const slackAckTimeout = 3 * time.Second
