package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/konstruct/konstruct"
)

// What an operator sees of the reply queue and may do to it (`konstruct
// status`, `konstruct queue stats|list|retry|archive`, the daemon's
// metrics), through asynq's Inspector on the queue QueueName(). asynqmon
// pointed at the same Redis shows the same queue.

// QueueInfo is the reply queue at a glance.
type QueueInfo struct {
	Name string
	Stats
	// Processed and Failed count today's (UTC) finished and failed runs;
	// the totals count since the queue was created.
	Processed, Failed           int
	ProcessedTotal, FailedTotal int
	// Latency is how long the oldest pending task has waited.
	Latency     time.Duration
	MemoryBytes int64
	Paused      bool
}

// Info reads the reply queue's counters (all zero when it was never used).
func (q *Queue) Info(ctx context.Context) (QueueInfo, error) {
	name := q.keys.queue()
	if err := ctx.Err(); err != nil {
		return QueueInfo{}, err
	}
	// GetQueueInfo's error for an unknown queue wraps no exported
	// sentinel: look the queue up first.
	queues, err := q.insp.Queues()
	if err != nil {
		return QueueInfo{}, unavailable("queue info", err)
	}
	if !slices.Contains(queues, name) {
		return QueueInfo{Name: name}, nil
	}
	info, err := q.insp.GetQueueInfo(name)
	if err != nil {
		return QueueInfo{}, unavailable("queue info", err)
	}
	return QueueInfo{
		Name: name,
		Stats: Stats{Pending: info.Pending, Active: info.Active, Scheduled: info.Scheduled,
			Retry: info.Retry, Archived: info.Archived, Completed: info.Completed},
		Processed: info.Processed, Failed: info.Failed, ProcessedTotal: info.ProcessedTotal, FailedTotal: info.FailedTotal,
		Latency: info.Latency, MemoryBytes: info.MemoryUsage, Paused: info.Paused,
	}, nil
}

// Task states an operator can list.
const (
	StatePending   = "pending"
	StateActive    = "active"
	StateScheduled = "scheduled" // deferred: its tenant was at its share of the workers
	StateRetry     = "retry"
	StateArchived  = "archived"
	StateCompleted = "completed"
)

// TaskStates lists the states in the order a reply moves through them.
var TaskStates = []string{StatePending, StateActive, StateScheduled, StateRetry, StateArchived, StateCompleted}

// Task is one reply task as an operator sees it: which post it answers
// (never the message text), where it stands and how its runs went.
type Task struct {
	ID         string         `json:"id"`
	State      string         `json:"state"`
	Post       konstruct.Post `json:"post"`
	EnqueuedAt time.Time      `json:"enqueued_at,omitzero"`
	Retried    int            `json:"retried"`
	MaxRetry   int            `json:"max_retry"`
	LastError  string         `json:"last_error,omitempty"`
	LastFailed time.Time      `json:"last_failed_at,omitzero"`
	NextRun    time.Time      `json:"next_run_at,omitzero"`
}

func (q *Queue) lister(state string) (func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error), error) {
	switch state {
	case StatePending:
		return q.insp.ListPendingTasks, nil
	case StateActive:
		return q.insp.ListActiveTasks, nil
	case StateScheduled:
		return q.insp.ListScheduledTasks, nil
	case StateRetry:
		return q.insp.ListRetryTasks, nil
	case StateArchived:
		return q.insp.ListArchivedTasks, nil
	case StateCompleted:
		return q.insp.ListCompletedTasks, nil
	}
	return nil, konstruct.Errorf(konstruct.EINVALID, "unknown task state %q (one of %s)", state, strings.Join(TaskStates, ", "))
}

// listPage is the Inspector's page size: a few round trips for thousands.
const listPage = 500

// Tasks lists up to limit tasks in a state (limit ≤ 0: 100), in the
// Inspector's order (pending: next to run first; retry and scheduled: by
// next run; archived and completed: most recent last).
func (q *Queue) Tasks(ctx context.Context, state string, limit int) ([]Task, error) {
	if limit <= 0 {
		limit = 100
	}
	infos, _, err := q.list(ctx, state, limit)
	if err != nil {
		return nil, err
	}
	out := make([]Task, 0, len(infos))
	for _, ti := range infos {
		out = append(out, toTask(ti))
	}
	return out, nil
}

// list pages through up to limit tasks of a state; more reports that some
// were left out.
func (q *Queue) list(ctx context.Context, state string, limit int) (infos []*asynq.TaskInfo, more bool, err error) {
	ls, err := q.lister(state)
	if err != nil {
		return nil, false, err
	}
	for page := 1; len(infos) < limit; page++ {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		size := min(listPage, limit-len(infos))
		batch, err := ls(q.keys.queue(), asynq.Page(page), asynq.PageSize(size))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, unavailable("list "+state+" tasks", err)
		}
		infos = append(infos, batch...)
		if len(batch) < size {
			return infos, false, nil
		}
	}
	return infos, true, nil
}

func toTask(ti *asynq.TaskInfo) Task {
	t := Task{ID: ti.ID, State: ti.State.String(), Retried: ti.Retried, MaxRetry: ti.MaxRetry,
		LastError: konstruct.Redact(ti.LastErr), LastFailed: ti.LastFailedAt, NextRun: ti.NextProcessAt}
	t.Post, _ = parsePost(strings.TrimPrefix(ti.ID, "reply:"))
	var job struct {
		EnqueuedAt time.Time `json:"enqueued_at"`
	}
	if json.Unmarshal(ti.Payload, &job) == nil {
		t.EnqueuedAt = job.EnqueuedAt
	}
	return t
}

// TeamBacklog is one workspace's unfinished reply jobs.
type TeamBacklog struct {
	Queued  int // waiting their tenant's turn (fair.go), pending, deferred or waiting for a retry
	Running int // active: a worker is on it
}

// Backlog is the unfinished work of the reply queue by workspace (team id)
// and the age of the oldest unfinished reply.
type Backlog struct {
	Teams map[string]TeamBacklog
	// Waiting counts the jobs not admitted into the task queue yet: they
	// wait for their tenant's turn at the workers (fair.go).
	Waiting int
	// Oldest is how long the oldest unfinished reply has waited since the
	// router enqueued it: how long its placeholder has shown.
	Oldest time.Duration
	// Partial is set when a state held more than the limit of tasks read:
	// the counts per team are then lower bounds.
	Partial bool
}

// Backlog reads the jobs waiting for admission and up to limit tasks of
// each unfinished state (limit ≤ 0: 5000), and counts them per workspace.
func (q *Queue) Backlog(ctx context.Context, limit int) (Backlog, error) {
	if limit <= 0 {
		limit = 5000
	}
	b := Backlog{Teams: map[string]TeamBacklog{}}
	now := time.Now()
	add := func(p konstruct.Post, running bool, enqueued time.Time) {
		tb := b.Teams[p.TeamID]
		if running {
			tb.Running++
		} else {
			tb.Queued++
		}
		b.Teams[p.TeamID] = tb
		if !enqueued.IsZero() {
			b.Oldest = max(b.Oldest, now.Sub(enqueued))
		}
	}
	// The tasks: counted here, and not again among the jobs below (a job
	// stays listed until its task ends; an archived one is not waiting).
	tasks := map[string]bool{}
	for _, state := range []string{StatePending, StateActive, StateScheduled, StateRetry, StateArchived} {
		infos, more, err := q.list(ctx, state, limit)
		if err != nil {
			return Backlog{}, err
		}
		b.Partial = b.Partial || more
		for _, ti := range infos {
			t := toTask(ti)
			tasks[t.Post.String()] = true
			if state != StateArchived {
				add(t.Post, state == StateActive, t.EnqueuedAt)
			}
		}
	}
	jobs, err := q.Jobs(ctx)
	if err != nil {
		return Backlog{}, err
	}
	for _, j := range jobs {
		if p := j.Message.Post(); !tasks[p.String()] {
			b.Waiting++
			add(p, false, j.EnqueuedAt)
		}
	}
	if b.Partial {
		// The tasks left out may be older: the queue's own latency is
		// the oldest pending task's wait.
		if info, err := q.Info(ctx); err == nil {
			b.Oldest = max(b.Oldest, info.Latency)
		}
	}
	return b, nil
}

// OldestWaiting is Backlog's Oldest at a bounded cost, for a metric
// sampled every few seconds.
func (q *Queue) OldestWaiting(ctx context.Context) (time.Duration, error) {
	b, err := q.Backlog(ctx, listPage)
	return b.Oldest, err
}

// InFlight counts, per workspace (team id), the replies begun and not
// finished (the janitor's index): their thread shows the placeholder or a
// partial answer.
func (q *Queue) InFlight(ctx context.Context) (map[string]int, error) {
	members, err := q.rdb.ZRange(ctx, q.keys.inflight(), 0, -1).Result()
	if err != nil {
		return nil, unavailable("replies in flight", err)
	}
	out := map[string]int{}
	for _, m := range members {
		if p, ok := parsePost(m); ok {
			out[p.TeamID]++
		}
	}
	return out, nil
}

// RetryTask runs an archived, retrying or deferred task now. A reply whose
// thread already shows its answer or error text is not written again.
func (q *Queue) RetryTask(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return q.taskError(q.insp.RunTask(q.keys.queue(), id), id, "retry")
}

// RetryAll runs every archived and retrying task now and says how many.
func (q *Queue) RetryAll(ctx context.Context) (int, error) {
	return q.all(ctx, "retry tasks", q.insp.RunAllArchivedTasks, q.insp.RunAllRetryTasks)
}

// ArchiveTask stops a pending, deferred or retrying task from running; it
// stays archived (and its thread keeps its placeholder) until RetryTask.
// Its room at the workers goes back to the dispatcher, as when a task
// ends (fair.go).
func (q *Queue) ArchiveTask(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := q.taskError(q.insp.ArchiveTask(q.keys.queue(), id), id, "archive"); err != nil {
		return err
	}
	if post, ok := parsePost(strings.TrimPrefix(id, "reply:")); ok {
		q.finish(ctx, post)
	}
	return nil
}

// ArchiveAll archives the tasks in the given states (retry, scheduled,
// pending), one by one so that each one's room goes back (ArchiveTask),
// and says how many. Jobs still waiting for their turn are not tasks yet.
func (q *Queue) ArchiveAll(ctx context.Context, states ...string) (int, error) {
	for _, s := range states {
		if s != StateRetry && s != StateScheduled && s != StatePending {
			return 0, konstruct.Errorf(konstruct.EINVALID, "%s tasks cannot be archived (only pending, scheduled and retry)", s)
		}
	}
	n := 0
	for _, s := range states {
		for {
			infos, _, err := q.list(ctx, s, listPage)
			if err != nil {
				return n, err
			}
			archived := 0
			for _, ti := range infos {
				err := q.ArchiveTask(ctx, ti.ID)
				switch konstruct.ErrorCode(err) {
				case "":
					archived++
				case konstruct.ENOTFOUND, konstruct.ECONFLICT: // it ran or moved meanwhile
				default:
					return n + archived, err
				}
			}
			n += archived
			if len(infos) < listPage || archived == 0 {
				break
			}
		}
	}
	return n, nil
}

func (q *Queue) all(ctx context.Context, what string, fns ...func(string) (int, error)) (int, error) {
	total := 0
	for _, fn := range fns {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, err := fn(q.keys.queue())
		if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
			return total, unavailable(what, err)
		}
		total += n
	}
	return total, nil
}

// taskError maps the Inspector's refusals to what an operator can act on.
func (q *Queue) taskError(err error, id, verb string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return &konstruct.Error{Code: konstruct.ENOTFOUND, Message: fmt.Sprintf("no task %q in queue %s (see `konstruct queue list`)", id, q.keys.queue()), Err: err}
	case strings.Contains(err.Error(), "already"), strings.Contains(err.Error(), "cannot"):
		// e.g. "task is already running", "cannot archive an active task".
		return &konstruct.Error{Code: konstruct.ECONFLICT, Message: fmt.Sprintf("cannot %s task %s: %s", verb, id, lastPart(err.Error())), Err: err}
	}
	return unavailable(verb+" task", err)
}

// lastPart is the innermost text of a wrapped error string.
func lastPart(s string) string {
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

// ListPrefixes finds the key prefixes in Redis that match re (anchored at
// the start of a key, with a literal start such as `^demo:[0-9a-f]{8}:`):
// among plain keys, asynq's keys and asynq's queue registry. It lets a run
// find what earlier runs of its kind left behind, for Purge.
func (q *Queue) ListPrefixes(ctx context.Context, re *regexp.Regexp) ([]string, error) {
	lit, _ := re.LiteralPrefix()
	if lit == "" {
		return nil, errors.New("list prefixes: the pattern needs a literal start")
	}
	found := map[string]bool{}
	scan := func(glob string, key func(string) string) error {
		return q.scanKeys(ctx, glob, func(k string) error { // one call at a time
			if p := re.FindString(key(k)); p != "" {
				found[p] = true
			}
			return nil
		})
	}
	asynqInner := func(k string) string { // asynq:{<queue>}:… → <queue>
		k = strings.TrimPrefix(k, "asynq:{")
		inner, _, _ := strings.Cut(k, "}")
		return inner
	}
	if err := scan(globEscape(lit)+"*", func(k string) string { return k }); err != nil {
		return nil, unavailable("list prefixes", err)
	}
	if err := scan("asynq:{"+globEscape(lit)+"*", asynqInner); err != nil {
		return nil, unavailable("list prefixes", err)
	}
	queues, err := q.rdb.SMembers(ctx, "asynq:queues").Result()
	if err != nil {
		return nil, unavailable("list prefixes", err)
	}
	for _, qn := range queues {
		if p := re.FindString(qn); p != "" {
			found[p] = true
		}
	}
	out := make([]string, 0, len(found))
	for p := range found {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

// globEscape quotes the characters SCAN MATCH treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
