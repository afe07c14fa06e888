package queue

import (
	"context"
	"strconv"
	"time"

	"github.com/konstruct/konstruct"
)

// Test hooks into the dispatcher (this file is compiled into the tests only).

func (q *Queue) Dispatch(ctx context.Context) (int, error)       { return q.dispatch(ctx) }
func (q *Queue) Finish(ctx context.Context, post konstruct.Post) { q.finish(ctx, post) }

// RegisterWorkers pretends a worker process of concurrency n is alive.
func (q *Queue) RegisterWorkers(ctx context.Context, id string, n int) error {
	exp := q.cfg.Now().Add(time.Minute).UnixMilli()
	return q.rdb.HSet(ctx, q.keys.fairWorkers(), id, strconv.Itoa(n)+"|"+strconv.FormatInt(exp, 10)).Err()
}

// Pending lists the posts of the tasks pending in asynq, in order.
func (q *Queue) Pending() ([]konstruct.Post, error) {
	tis, err := q.insp.ListPendingTasks(q.keys.queue())
	var out []konstruct.Post
	for _, ti := range tis {
		p, _ := parsePost(ti.ID[len("reply:"):])
		out = append(out, p)
	}
	return out, err
}
