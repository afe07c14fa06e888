package router

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Purge deletes everything an install (or a demo, benchmark or test run)
// keeps in Redis under prefix: its own keys ({prefix}…), the keys of its
// asynq queue (prefix+"replies") and the queue's entry in asynq's list of
// queues. It refuses an empty prefix, which would mean the whole database.
func Purge(ctx context.Context, rdb redis.UniversalClient, prefix string) error {
	if prefix == "" {
		return errors.New("purge: refusing to delete keys without a prefix")
	}
	for _, pattern := range []string{prefix + "*", "asynq:{" + prefix + "*"} {
		iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
		var batch []string
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			err := rdb.Unlink(ctx, batch...).Err()
			batch = batch[:0]
			return err
		}
		for iter.Next(ctx) {
			if batch = append(batch, iter.Val()); len(batch) == 1000 {
				if err := flush(); err != nil {
					return fmt.Errorf("purge %s: %w", pattern, err)
				}
			}
		}
		if err := iter.Err(); err != nil {
			return fmt.Errorf("purge %s: %w", pattern, err)
		}
		if err := flush(); err != nil {
			return fmt.Errorf("purge %s: %w", pattern, err)
		}
	}
	if err := rdb.SRem(ctx, "asynq:queues", prefix+"replies").Err(); err != nil {
		return fmt.Errorf("purge queue: %w", err)
	}
	return nil
}
