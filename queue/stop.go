package queue

import (
	"context"
	"time"

	"github.com/konstruct/konstruct"
)

// StopTTL is how long a Stop is remembered: longer than any answer streams
// (llm.timeouts.total, 5 min by default, plus its delivery).
const StopTTL = time.Hour

// StopReply asks the reply to a post to stop: the worker streaming it,
// whatever its process, polls ReplyStopped and cancels its LLM request.
func (q *Queue) StopReply(ctx context.Context, post konstruct.Post) error {
	if err := q.rdb.Set(ctx, q.keys.stop(post), 1, StopTTL).Err(); err != nil {
		return unavailable("stop reply", err)
	}
	return nil
}

// ReplyStopped reports whether someone asked the reply to a post to stop.
func (q *Queue) ReplyStopped(ctx context.Context, post konstruct.Post) (bool, error) {
	n, err := q.rdb.Exists(ctx, q.keys.stop(post)).Result()
	if err != nil {
		return false, unavailable("read stop", err)
	}
	return n == 1, nil
}
