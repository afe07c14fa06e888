package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/konstruct/konstruct"
)

// Task options of reply:generate.
const (
	// TaskRetention keeps a finished task (and so its id) as long as the
	// dedupe keys live: a late duplicate enqueue is still refused.
	TaskRetention = 24 * time.Hour
	// TaskMaxRetry: a reply that failed this often gets its error text.
	TaskMaxRetry = 3
	// TaskTimeout bounds one attempt (the LLM's own total timeout is 5 min).
	TaskTimeout = 10 * time.Minute
)

// AsynqEnqueuer enqueues reply:generate tasks with asynq.
type AsynqEnqueuer struct {
	client *asynq.Client
	queue  string
}

// NewAsynqEnqueuer returns an Enqueuer on the asynq queue (redis.prefix +
// "replies"). Close releases its Redis connections.
func NewAsynqEnqueuer(opt asynq.RedisConnOpt, queue string) *AsynqEnqueuer {
	return &AsynqEnqueuer{client: asynq.NewClient(opt), queue: queue}
}

// TaskID is the asynq task id of the reply to a post: tenant + team +
// channel + ts, so the twins and retries of one post, and a second daemon
// on the same app, all map to one task.
func TaskID(m konstruct.Message) string {
	return "reply:" + m.TenantID + ":" + m.TeamID + ":" + m.ChannelID + ":" + m.TS
}

// Enqueue enqueues the job; ErrDuplicate if the post already has a task.
func (e *AsynqEnqueuer) Enqueue(ctx context.Context, job konstruct.ReplyJob) error {
	payload, err := json.Marshal(job)
	if err != nil {
		return fmt.Errorf("encode reply job: %w", err)
	}
	task := asynq.NewTask(konstruct.TaskReplyGenerate, payload)
	_, err = e.client.EnqueueContext(ctx, task,
		asynq.TaskID(TaskID(job.Message)),
		asynq.Queue(e.queue),
		asynq.MaxRetry(TaskMaxRetry),
		asynq.Retention(TaskRetention),
		asynq.Timeout(TaskTimeout),
	)
	if errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask) {
		return ErrDuplicate
	}
	return err
}

// Close closes the asynq client.
func (e *AsynqEnqueuer) Close() error { return e.client.Close() }
