package queue

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/konstruct/konstruct"
)

// The intake stream (<p>intake, keys.go) holds the records of envelopes
// the gateway acked, until the router's decision on each is durable. The
// router reads it as a consumer group: each process is one consumer, and
// records a consumer took and did not finish are taken over by another
// after a lease.
const intakeGroup = "router"

// AppendIntake records messages at the end of the intake stream, in one
// round trip (the gateway's group commit).
func (q *Queue) AppendIntake(ctx context.Context, msgs []konstruct.Message) error {
	pipe := q.rdb.Pipeline()
	for i := range msgs {
		b, err := json.Marshal(&msgs[i])
		if err != nil {
			return err
		}
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: q.keys.intake(), Values: []string{"m", string(b)}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("record intake", err)
	}
	return nil
}

// ReadIntake returns up to n records for consumer. With after "" they are
// new ones, waited for up to block; else they are the ones this consumer
// took earlier and did not finish (a restarted process of the same name),
// with ids after `after` ("0" for the first), at once.
func (q *Queue) ReadIntake(ctx context.Context, consumer string, n int, block time.Duration, after string) ([]konstruct.Record, error) {
	if after != "" {
		recs, err := q.readIntake(ctx, consumer, after, n, 0)
		for i := range recs {
			recs[i].Redelivered = true
		}
		return recs, err
	}
	return q.readIntake(ctx, consumer, ">", n, block)
}

func (q *Queue) readIntake(ctx context.Context, consumer, from string, n int, block time.Duration) ([]konstruct.Record, error) {
	args := &redis.XReadGroupArgs{Group: intakeGroup, Consumer: consumer, Streams: []string{q.keys.intake(), from}, Count: int64(n), Block: block}
	if block == 0 {
		args.Block = -1 // no BLOCK argument: answer at once
	}
	res, err := q.rdb.XReadGroup(ctx, args).Result()
	if isNoGroup(err) {
		if err := q.createIntakeGroup(ctx); err != nil {
			return nil, err
		}
		res, err = q.rdb.XReadGroup(ctx, args).Result()
	}
	switch {
	case errors.Is(err, redis.Nil):
		return nil, nil
	case err != nil:
		return nil, unavailable("read intake", err)
	}
	var out []konstruct.Record
	for _, s := range res {
		out = append(out, q.records(ctx, s.Messages)...)
	}
	return out, nil
}

// ReclaimIntake takes over up to n records other consumers took and left
// unfinished for at least minIdle (their process crashed, or is stuck).
func (q *Queue) ReclaimIntake(ctx context.Context, consumer string, minIdle time.Duration, n int) ([]konstruct.Record, error) {
	msgs, _, err := q.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream: q.keys.intake(), Group: intakeGroup, Consumer: consumer, MinIdle: minIdle, Start: "0-0", Count: int64(n),
	}).Result()
	if isNoGroup(err) {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable("reclaim intake", err)
	}
	recs := q.records(ctx, msgs)
	for i := range recs {
		recs[i].Redelivered = true
	}
	return recs, nil
}

// HandBackIntake gives records a consumer took and will not finish (it is
// stopping) back to the group at once: marked long idle, the next
// ReclaimIntake of any process takes them, without waiting for the lease.
func (q *Queue) HandBackIntake(ctx context.Context, consumer string, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	// go-redis has no IDLE option on XClaimArgs: a raw XCLAIM sets it.
	args := []any{"XCLAIM", q.keys.intake(), intakeGroup, consumer, 0}
	for _, id := range ids {
		args = append(args, id)
	}
	args = append(args, "IDLE", time.Hour.Milliseconds(), "JUSTID")
	if err := q.rdb.Do(ctx, args...).Err(); err != nil {
		return unavailable("hand back intake records", err)
	}
	return nil
}

// DoneIntake acknowledges records whose outcome is durable and deletes
// them from the stream.
func (q *Queue) DoneIntake(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	pipe := q.rdb.Pipeline()
	pipe.XAck(ctx, q.keys.intake(), intakeGroup, ids...)
	pipe.XDel(ctx, q.keys.intake(), ids...)
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("finish intake records", err)
	}
	return nil
}

// IntakeBacklog is how many records wait for the router: recorded and not
// yet read, or read and not finished.
func (q *Queue) IntakeBacklog(ctx context.Context) (int64, error) {
	n, err := q.rdb.XLen(ctx, q.keys.intake()).Result()
	if err != nil {
		return 0, unavailable("intake backlog", err)
	}
	return n, nil
}

// records decodes stream entries. An entry that does not decode (or was
// deleted under the group) cannot be routed: it is finished at once, and
// logged.
func (q *Queue) records(ctx context.Context, msgs []redis.XMessage) []konstruct.Record {
	out := make([]konstruct.Record, 0, len(msgs))
	var bad []string
	for _, m := range msgs {
		raw, _ := m.Values["m"].(string)
		var msg konstruct.Message
		if raw == "" || json.Unmarshal([]byte(raw), &msg) != nil {
			bad = append(bad, m.ID)
			continue
		}
		out = append(out, konstruct.Record{ID: m.ID, Message: msg})
	}
	if len(bad) > 0 {
		q.log.Error("intake records that do not decode were dropped", "ids", strings.Join(bad, ","))
		_ = q.DoneIntake(ctx, bad...)
	}
	return out
}

func (q *Queue) createIntakeGroup(ctx context.Context) error {
	err := q.rdb.XGroupCreateMkStream(ctx, q.keys.intake(), intakeGroup, "0").Err()
	if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		return unavailable("create intake group", err)
	}
	return nil
}

func isNoGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }
