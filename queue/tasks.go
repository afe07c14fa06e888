package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/konstruct/konstruct"
)

// Options of every reply:generate task.
const (
	// TaskRetention keeps a finished task (and so its id) as long as the
	// dedupe claims live: a late duplicate enqueue is still refused.
	TaskRetention = 24 * time.Hour
	// TaskMaxRetry: a reply that failed this often gets its error text.
	TaskMaxRetry = 3
	// TaskTimeout bounds one run (the LLM's own total timeout is 5 min).
	TaskTimeout = 10 * time.Minute
)

// Enqueue queues the reply job of a post: it waits in its tenant's list
// until the dispatcher admits it into the task queue (fair.go). A post that
// already has a job (a twin, a retry, another daemon) gives an ECONFLICT
// error.
func (q *Queue) Enqueue(ctx context.Context, job konstruct.ReplyJob) error {
	post := job.Message.Post()
	if !post.Valid() {
		return konstruct.Errorf(konstruct.EINVALID, "reply job without tenant, team, channel or ts")
	}
	payload, err := json.Marshal(job)
	if err != nil {
		return fmt.Errorf("encode reply job: %w", err)
	}
	return q.enqueueFair(ctx, post, payload)
}

// Serve runs the reply tasks with h, concurrency at a time, until ctx
// ends; then it stops taking tasks, lets running ones finish within
// ShutdownTimeout, hands the others back to the queue, waits for their
// handlers to return, and returns nil.
//
// h's nil means done; an error wrapping konstruct.ErrNoRetry ends the task;
// a *konstruct.DeferError runs it again after its delay without counting a
// failure; any other error is retried (up to TaskMaxRetry, soon).
func (q *Queue) Serve(ctx context.Context, concurrency int, h func(context.Context, konstruct.ReplyJob, konstruct.Delivery) error) error {
	var running sync.WaitGroup
	srv := asynq.NewServerFromRedisClient(q.rdb, asynq.Config{
		Concurrency:       concurrency,
		Queues:            map[string]int{q.keys.queue(): 1},
		ShutdownTimeout:   q.cfg.ShutdownTimeout,
		TaskCheckInterval: q.cfg.TaskCheckInterval,
		// Deferred tasks come back after a second or so, not asynq's
		// default of up to 5 s.
		DelayedTaskCheckInterval: time.Second,
		RetryDelayFunc:           retryDelay,
		IsFailure:                func(err error) bool { _, d := konstruct.Deferred(err); return !d },
		Logger:                   asynqLogger{q.log.With(slog.String("component", "asynq"))},
		LogLevel:                 asynq.WarnLevel,
		ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, _ *asynq.Task, err error) {
			if _, d := konstruct.Deferred(err); d {
				return
			}
			n, _ := asynq.GetRetryCount(ctx)
			q.log.LogAttrs(ctx, slog.LevelWarn, "reply task failed", slog.String("error", err.Error()), slog.Int("retry", n))
		}),
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(konstruct.TaskReplyGenerate, func(ctx context.Context, t *asynq.Task) error {
		running.Add(1)
		defer running.Done()
		var job konstruct.ReplyJob
		if err := json.Unmarshal(t.Payload(), &job); err != nil {
			return fmt.Errorf("decode reply job: %w: %w", err, asynq.SkipRetry)
		}
		var d konstruct.Delivery
		d.Retry, _ = asynq.GetRetryCount(ctx)
		d.MaxRetry, _ = asynq.GetMaxRetry(ctx)
		err := h(ctx, job, d)
		_, deferred := konstruct.Deferred(err)
		noRetry := errors.Is(err, konstruct.ErrNoRetry)
		if err == nil || noRetry || (!deferred && ctx.Err() == nil && d.LastTry()) {
			// The task ends here: its room goes back to the dispatcher.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			q.finish(fctx, job.Message.Post())
			cancel()
		}
		if noRetry {
			return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
		}
		return err
	})
	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("start reply queue: %w", err)
	}
	dispatched := make(chan struct{})
	go func() { defer close(dispatched); q.dispatcher(ctx, concurrency) }()
	<-ctx.Done()
	<-dispatched
	srv.Shutdown()
	// asynq cancels the context of the tasks it handed back but does not
	// wait for their handlers: wait here, so nothing writes after Serve.
	done := make(chan struct{})
	go func() { running.Wait(); close(done) }()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		q.log.Warn("reply handlers still running after shutdown")
	}
	return nil
}

// retryDelay runs a deferred task again after its delay, and retries a
// failed one soon: a reply nobody sees for minutes is worth little.
func retryDelay(n int, err error, _ *asynq.Task) time.Duration {
	if d, ok := konstruct.Deferred(err); ok {
		return d
	}
	return min(2*time.Second<<min(n, 4), 30*time.Second)
}

// TaskState is where a post's reply task stands: "waiting" (for
// admission), "pending", "active", "scheduled", "retry", "archived",
// "completed", or "" when there is no such task.
func (q *Queue) TaskState(ctx context.Context, post konstruct.Post) (string, error) {
	info, err := q.insp.GetTaskInfo(q.keys.queue(), taskID(post))
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
		if w, err := q.waiting(ctx, post); err != nil || w {
			return "waiting", err
		}
		return "", nil
	case err != nil:
		return "", unavailable("task state", err)
	}
	return info.State.String(), nil
}

// Stats is the size of the reply queue by task state.
type Stats struct {
	Pending, Active, Scheduled, Retry, Archived, Completed int
}

// Stats reads the reply queue's size by state (all zero when it has never
// been used).
func (q *Queue) Stats(ctx context.Context) (Stats, error) {
	info, err := q.Info(ctx)
	return info.Stats, err
}

// Purge deletes everything the install (or a demo, benchmark or test run)
// keeps in Redis under its prefix: its keys (keys.go) and, through asynq's
// Inspector, its reply queue with every task in it. Run it with no process
// of the install running. It refuses an empty prefix, which would mean the
// whole database.
func (q *Queue) Purge(ctx context.Context) error {
	if q.cfg.Prefix == "" {
		return errors.New("purge: refusing to delete keys without a prefix")
	}
	if err := q.unlinkMatching(ctx, q.cfg.Prefix+"*"); err != nil {
		return err
	}
	qn := q.keys.queue()
	queues, err := q.insp.Queues()
	if err != nil {
		return unavailable("purge queue", err)
	}
	if !slices.Contains(queues, qn) {
		return nil
	}
	for _, del := range []func(string) (int, error){
		q.insp.DeleteAllPendingTasks, q.insp.DeleteAllScheduledTasks, q.insp.DeleteAllRetryTasks,
		q.insp.DeleteAllArchivedTasks, q.insp.DeleteAllCompletedTasks,
	} {
		if _, err := del(qn); err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
			return unavailable("purge queue", err)
		}
	}
	// After a crash the queue may still count tasks as active (their
	// worker died): DeleteQueue refuses then; the unlink below removes
	// their keys all the same.
	if err := q.insp.DeleteQueue(qn, true); err != nil && !errors.Is(err, asynq.ErrQueueNotFound) && !strings.Contains(err.Error(), "active tasks") {
		return unavailable("purge queue", err)
	}
	// What the Inspector cannot delete: the queue's lifetime and daily
	// counters. Every key of a queue carries the queue's name as its hash
	// tag (asynq's documented layout for Redis Cluster), so they are found
	// by that tag, not by asynq's internal key names.
	return q.unlinkMatching(ctx, "asynq:{"+qn+"}:*")
}

// unlinkMatching deletes the keys matching a SCAN pattern, in batches:
// one UNLINK per key, pipelined (a Cluster's keys of one batch may live in
// several slots).
func (q *Queue) unlinkMatching(ctx context.Context, pattern string) error {
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		pipe := q.rdb.Pipeline()
		for _, k := range batch {
			pipe.Unlink(ctx, k)
		}
		_, err := pipe.Exec(ctx)
		batch = batch[:0]
		return err
	}
	err := q.scanKeys(ctx, pattern, func(k string) error {
		if batch = append(batch, k); len(batch) == 1000 {
			return flush()
		}
		return nil
	})
	if err := errors.Join(err, flush()); err != nil {
		return unavailable("purge", err)
	}
	return nil
}

// scanKeys calls fn with each key matching a SCAN pattern: on every
// master of a Cluster, else on the one server.
func (q *Queue) scanKeys(ctx context.Context, pattern string, fn func(string) error) error {
	scan := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			if err := fn(iter.Val()); err != nil {
				return err
			}
		}
		return iter.Err()
	}
	switch c := q.rdb.(type) {
	case *redis.ClusterClient:
		var mu sync.Mutex // fn is called from one master at a time
		return c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			return scan(ctx, m)
		})
	case *redis.Client:
		return scan(ctx, c)
	}
	iter := q.rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		if err := fn(iter.Val()); err != nil {
			return err
		}
	}
	return iter.Err()
}

// asynqLogger sends asynq's logs to slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)) }
