package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/slacksim"
)

// TestStatusAndQueueCommands: `konstruct status` shows a workspace's
// sockets (from the daemon's /readyz), its queued replies (Redis) and its
// last answer and errors (Postgres), and says when the daemon is away;
// `konstruct queue` lists, archives and retries the task of a post without
// ever showing the message.
func TestStatusAndQueueCommands(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{simOpts: []slacksim.Option{slacksim.WithAckTimeout(time.Second)}})
	tenantID, ws := e.seed("stat")
	vars := e.with("KONSTRUCT_STATE_DIR", t.TempDir(), "KONSTRUCT_HTTP_ADDR", freeAddr(t))
	row := func(out string) string {
		t.Helper()
		for line := range strings.SplitSeq(out, "\n") {
			if strings.HasPrefix(line, ws.TeamID+" ") {
				return strings.Join(strings.Fields(line), " ")
			}
		}
		t.Fatalf("no row for %s in:\n%s", ws.TeamID, out)
		return ""
	}

	// No daemon yet: what Redis and Postgres say, and a non-zero exit.
	r := cli(t, vars, "status")
	if r.err == nil || !strings.Contains(r.line(), "the daemon does not answer") {
		t.Errorf("status without a daemon: err %q", r.line())
	}
	if !strings.Contains(r.stdout, "daemon     not answering: nothing listens at http://") ||
		!strings.Contains(row(r.stdout), "unknown 0 0 never 0 0") {
		t.Errorf("status without a daemon:\n%s", r.stdout)
	}

	// A gateway without workers: the mention's task stays queued.
	dm := startDaemon(t, vars, roles{gateway: true}, 5*time.Second)
	waitFor(t, 10*time.Second, "both sockets", func() bool { return e.sim.Connections(ws.AppID) == 2 })
	if _, err := e.sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "a private matter", ""); err != nil {
		t.Fatal(err)
	}
	q := e.rd.NewQueue(t, queue.Config{ShutdownTimeout: 100 * time.Millisecond})
	waitFor(t, 10*time.Second, "the reply job", func() bool {
		b, err := q.Backlog(context.Background(), 0)
		return err == nil && b.Waiting == 1
	})
	st := testenv.OpenStore(t, e.pg.RuntimeURL, nil)
	for i, outcome := range []string{konstruct.OutcomeAnswered, konstruct.OutcomeError} {
		if err := st.RecordReply(context.Background(), konstruct.Reply{TenantID: tenantID, TeamID: ws.TeamID, ChannelID: ws.GeneralChannelID,
			EventID: "EvStatus" + string(rune('0'+i)), Outcome: outcome}); err != nil {
			t.Fatal(err)
		}
	}

	r = mustCLI(t, vars, "status")
	t.Logf("status:\n%s", r.stdout)
	if got := row(r.stdout); !regexp.MustCompile(`^` + ws.TeamID + ` .+ stat 2/2 connected 1 [01] \d+s ago 1 1$`).MatchString(got) {
		// In flight: the reply counts once its placeholder is recorded
		// (by the router, or by the worker that takes the task).
		t.Errorf("status row %q, want 2/2 connected, 1 queued, answered seconds ago, 1 answer, 1 error", got)
	}
	if !regexp.MustCompile(`(?m)^daemon     ready at http://127\.0\.0\.1:\d+ \(postgres ok, redis ok\)$`).MatchString(r.stdout) ||
		!strings.Contains(r.stdout, "queue      "+e.rd.Prefix+"replies: 1 waiting their turn, 0 pending, 0 active") {
		t.Errorf("status header:\n%s", r.stdout)
	}
	var rep statusReport
	r = mustCLI(t, vars, "status", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	if len(rep.Workspaces) != 1 || rep.Workspaces[0].Sockets != "connected" || rep.Workspaces[0].Queued != 1 ||
		rep.Workspaces[0].Errors != 1 || rep.Queue == nil || rep.Queue.Waiting != 1 || !rep.Daemon.Ready {
		t.Errorf("status --json = %+v", rep)
	}

	// The daemon's sampled metrics: Postgres and Redis up, the workspace connected.
	dm.d.sample(context.Background())
	_, body := dm.get(t, "/metrics")
	samples := parseMetrics(t, body)
	value := func(name, label string) float64 {
		for _, s := range samples[name] {
			for _, v := range s.labels {
				if v == label {
					return s.value
				}
			}
		}
		return -1
	}
	for _, c := range []struct {
		name, label string
		want        float64
	}{
		{"konstruct_dependency_up", "postgres", 1}, {"konstruct_dependency_up", "redis", 1},
		{"konstruct_workspaces", "connected", 1}, {"konstruct_workspaces", "disconnected", 0},
		{"konstruct_sockets", "connected", 2}, {"konstruct_sockets", "disconnected", 0},
	} {
		if got := value(c.name, c.label); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.label, got, c.want)
		}
	}

	// The queue commands. A worker takes the job and, stopped, hands its
	// task back: a pending task.
	r = mustCLI(t, vars, "queue", "stats")
	if !regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(e.rd.Prefix)+`replies\s+1\s+0\s+0\s+0\s+0\s+0\s`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^`+ws.TeamID+`\s+1\s+0$`).MatchString(r.stdout) {
		t.Errorf("queue stats:\n%s", r.stdout)
	}
	sctx, stopServe := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- q.Serve(sctx, 1, func(ctx context.Context, _ konstruct.ReplyJob, _ konstruct.Delivery) error {
			<-ctx.Done()
			return ctx.Err()
		})
	}()
	waitFor(t, 10*time.Second, "the task running", func() bool {
		info, err := q.Info(context.Background())
		return err == nil && info.Active == 1
	})
	stopServe()
	<-served
	r = mustCLI(t, vars, "queue", "list", "--state", "pending", "--json")
	var tasks []queue.Task
	if err := json.Unmarshal([]byte(r.stdout), &tasks); err != nil || len(tasks) != 1 || tasks[0].Post.TeamID != ws.TeamID {
		t.Fatalf("queue list --json: %v\n%s", err, r.stdout)
	}
	id := tasks[0].ID
	r = mustCLI(t, vars, "queue", "list", "--state", "pending")
	if !strings.Contains(r.stdout, id) || strings.Contains(r.stdout, "private matter") {
		t.Errorf("queue list shows the message or not the task:\n%s", r.stdout)
	}
	if r = mustCLI(t, vars, "queue", "archive", id); !strings.HasPrefix(r.stdout, "1 tasks archived") {
		t.Errorf("queue archive: %q", r.stdout)
	}
	if r = mustCLI(t, vars, "queue", "list"); !strings.Contains(r.stdout, id) {
		t.Errorf("queue list (archived):\n%s", r.stdout)
	}
	if r = mustCLI(t, vars, "queue", "retry", "--all"); strings.TrimSpace(r.stdout) != "1 tasks run again" {
		t.Errorf("queue retry --all: %q", r.stdout)
	}
	failCLI(t, vars, []string{"give task ids"}, "queue", "retry")
	failCLI(t, vars, []string{"--state takes retry, scheduled or pending"}, "queue", "archive", "--all", "--state", "active")
	failCLI(t, vars, []string{"no task", "konstruct queue list"}, "queue", "archive", "reply:nope")
	failCLI(t, vars, []string{"--state must be one of"}, "queue", "list", "--state", "stuck")
}
