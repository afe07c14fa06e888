package bench_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/konstruct/konstruct/bench"
)

// TestRunQuick runs a tiny benchmark end to end against the real binary. It
// asserts what must hold on any machine — no duplicate or lost answer, every
// section measured — and never a speed.
func TestRunQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs it against PostgreSQL and Redis")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	adminURL, redisURL := "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "redis://127.0.0.1:6379/0"
	if c, err := pgx.Connect(ctx, adminURL); err != nil {
		t.Skipf("PostgreSQL not reachable (make services): %v", err)
	} else {
		_ = c.Close(ctx)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Skipf("Redis not reachable (make services): %v", err)
	}
	_ = rdb.Close()

	bin := filepath.Join(t.TempDir(), "konstruct")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "../cmd/konstruct")
	if out, err := build.CombinedOutput(); err != nil {
		t.Skipf("cannot build the binary: %v\n%s", err, out)
	}

	_, skipBolt := os.LookupEnv("BENCH_SKIP_BOLT")
	var out, progress bytes.Buffer
	rep, err := bench.Run(ctx, bench.Options{
		Binary:           bin,
		AdminURL:         adminURL,
		RedisURL:         redisURL,
		Quick:            true,
		Workspaces:       5,
		Rates:            []int{300},
		Phase:            time.Second,
		PipelineRate:     10,
		Steps:            []int{10},
		StepPhase:        time.Second,
		Drain:            10 * time.Second,
		StepWorkspaces:   10,
		SocketWorkspaces: 10,
		// The durable-ack phase on a private redis-server (skipped without one).
		DurableWorkspaces: 5,
		DurableRate:       300,
		// The Slack-limits phases at --quick's sizes (slacksim's rate limits
		// on), the realistic one smaller still.
		Limits:   bench.LimitsOptions{RealisticWorkspaces: 5, RealisticRate: 200, RealisticPhase: time.Second},
		SkipBolt: skipBolt,
		OutDir:   t.TempDir(),
		Progress: &progress,
	}, &out)
	t.Log("\n" + progress.String() + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Duplicates != 0 || rep.Lost != 0 || rep.Mentions == 0 {
		t.Errorf("%d mentions, %d duplicates, %d lost", rep.Mentions, rep.Duplicates, rep.Lost)
	}
	targets := map[string]bool{}
	for _, a := range rep.Ack {
		targets[a.Target] = true
		if a.Ack.N == 0 || a.Sent == 0 {
			t.Errorf("%s at %d/s: no acks measured: %+v", a.Target, a.Rate, a)
		}
	}
	want := []string{"konstruct", "slack-go"}
	if rep.BoltSkipped == "" {
		want = append(want, "bolt")
		if rep.BoltFeedback == nil || rep.BoltFeedback.N == 0 {
			t.Error("no Bolt feedback measured")
		}
	}
	for _, w := range want {
		if !targets[w] {
			t.Errorf("no ack row for %s", w)
		}
	}
	if rep.Feedback.N == 0 || rep.Overhead.N == 0 {
		t.Errorf("feedback %+v, overhead %+v: not measured", rep.Feedback, rep.Overhead)
	}
	if len(rep.Steps) == 0 || rep.Steps[0].Mentions == 0 {
		t.Errorf("steps not measured: %+v", rep.Steps)
	}
	if rep.RedisPing.N == 0 || rep.DaemonPeakRSS == 0 {
		t.Errorf("redis ping %+v, daemon peak RSS %v: not measured", rep.RedisPing, rep.DaemonPeakRSS)
	}
	if s := rep.Sockets; s == nil || s.Error != "" || s.ConnectSeconds == 0 || s.PeakRSS == 0 {
		t.Errorf("sockets not measured: %+v", s)
	}
	switch d := rep.Durable; {
	case d == nil:
		t.Error("durable-ack phase missing from the report")
	case d.Skipped != "":
		t.Logf("durable-ack phase skipped: %s", d.Skipped)
	case d.Error != "" || len(d.Rows) != 3:
		t.Errorf("durable-ack phase: %d rows, error %q", len(d.Rows), d.Error)
	default:
		for _, row := range d.Rows {
			if row.Ack.N == 0 || row.Sent == 0 {
				t.Errorf("durable-ack %s: no acks measured: %+v", row.Path, row.AckRow)
			}
		}
		if d.Spooled == 0 {
			t.Errorf("durable-ack phase: nothing went to the spool with Redis stopped: %+v", d)
		}
	}
	checkLimits(t, rep.Limits)
	if !strings.Contains(out.String(), `"duplicates":0`) {
		t.Error("the JSON line is missing from the output")
	}
}

// checkLimits asserts that every Slack-limits phase measured something
// and that every answer came exactly once — never a speed.
func checkLimits(t *testing.T, l *bench.Limits) {
	t.Helper()
	if l == nil {
		t.Error("Slack-limits phases missing from the report")
		return
	}
	if l.Error != "" || l.Duplicates != 0 || l.Lost != 0 || l.Mentions == 0 {
		t.Errorf("Slack-limits phases: %d mentions, %d duplicates, %d lost, error %q %v", l.Mentions, l.Duplicates, l.Lost, l.Error, l.LostDetail)
	}
	if re := l.Realistic; re == nil || re.Ack.N == 0 || re.Mentions == 0 || re.Answered != re.Mentions || re.Chatter == 0 || re.ChatterAnswered != 0 || re.Feedback.N == 0 {
		t.Errorf("realistic phase not measured or answers missing: %+v", re)
	}
	for _, b := range []*bench.Burst{l.Burst, l.Shared} {
		if b == nil || b.Error != "" || b.AnsweredOnce != b.Mentions || b.Completion.N != b.Mentions {
			t.Errorf("burst phase not measured or answers missing: %+v", b)
		}
	}
	if l.Shared != nil && len(l.Shared.UpdatesByWorker) != 2 {
		t.Errorf("two-worker phase: chat.update calls by worker %v, want two counts", l.Shared.UpdatesByWorker)
	}
	if n := l.Noisy; n == nil || n.Error != "" || n.Alone.Answered != n.Alone.Questions || n.During.Answered != n.During.Questions ||
		n.Alone.Questions == 0 || n.During.Questions == 0 || n.FloodMentions == 0 || n.FloodAnswered != n.FloodMentions {
		t.Errorf("noisy-neighbour phase not measured or answers missing: %+v", n)
	}
}
