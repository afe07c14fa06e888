package spool

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/metrics"
)

// Primary is where records belong: the intake stream in Redis
// (*queue.Queue).
type Primary interface {
	AppendIntake(ctx context.Context, msgs []konstruct.Message) error
	Ping(ctx context.Context) error
}

// RecorderConfig configures a Recorder. Zero values take the defaults noted.
type RecorderConfig struct {
	// Deadline is how long a group commit waits for Redis before it goes
	// to the spool instead (default 200 ms: well inside Slack's 3 s).
	Deadline time.Duration
	// ReplayEvery is how often the spool is tried against Redis while it
	// holds records, or while Redis is taken for down (default 250 ms).
	ReplayEvery time.Duration
	// ReplayBatch is how many records one replay step moves (default 256).
	ReplayBatch int
	Logger      *slog.Logger
	Metrics     *metrics.Metrics
}

// Recorder records intake messages durably: in Redis when it answers
// within the deadline, else in the spool; and replays the spool into Redis,
// in order, once Redis answers again. While the spool holds anything, new
// records go to the spool too, so that Redis receives them in the order
// they came; the replay takes from the head while Record appends to the
// tail, and only the switch back to Redis waits for Record (one mutex).
type Recorder struct {
	p   Primary
	sp  *Spool
	cfg RecorderConfig
	log *slog.Logger

	mu   sync.Mutex
	down atomic.Bool // Redis failed a write: records go to the spool until a replay succeeds
}

// NewRecorder returns a Recorder over p and sp; Run replays.
func NewRecorder(p Primary, sp *Spool, cfg RecorderConfig) *Recorder {
	cfg.Deadline = cmp.Or(cfg.Deadline, 200*time.Millisecond)
	cfg.ReplayEvery = cmp.Or(cfg.ReplayEvery, 250*time.Millisecond)
	cfg.ReplayBatch = cmp.Or(cfg.ReplayBatch, 256)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Recorder{p: p, sp: sp, cfg: cfg, log: cfg.Logger.With(slog.String("component", "intake"))}
	if n := sp.Len(); n > 0 {
		r.log.Warn("the intake spool holds records from an earlier run; replaying them into Redis", "records", n)
		cfg.Metrics.SpoolDepth(n)
	}
	return r
}

// Record writes msgs durably, or returns an error and writes none.
func (r *Recorder) Record(ctx context.Context, msgs []konstruct.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.down.Load() && r.sp.Len() == 0 {
		dctx, cancel := context.WithTimeout(ctx, r.cfg.Deadline)
		err := r.p.AppendIntake(dctx, msgs)
		cancel()
		if err == nil {
			r.cfg.Metrics.Recorded("redis", len(msgs))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.down.Store(true)
		r.log.Warn("Redis did not take the intake records in time; recording to the disk spool until it does",
			"error", err.Error(), "deadline", r.cfg.Deadline)
	}
	data := make([][]byte, len(msgs))
	for i := range msgs {
		b, err := json.Marshal(&msgs[i])
		if err != nil {
			return err
		}
		data[i] = b
	}
	if err := r.sp.Append(data); err != nil {
		return err
	}
	r.cfg.Metrics.Recorded("spool", len(msgs))
	r.cfg.Metrics.SpoolDepth(r.sp.Len())
	return nil
}

// Run replays the spool into Redis until ctx ends.
func (r *Recorder) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.ReplayEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if r.down.Load() || r.sp.Len() > 0 {
			r.replay(ctx)
		}
	}
}

// replay moves the spool into Redis, batch by batch, until it is empty
// (then Redis takes records again) or Redis fails.
func (r *Recorder) replay(ctx context.Context) {
	moved := 0
	defer func() {
		if moved > 0 {
			r.log.Info("replayed spooled intake records into Redis", "records", moved, "left", r.sp.Len())
		}
	}()
	for ctx.Err() == nil {
		done, n, err := r.replayStep(ctx)
		moved += n
		if err != nil || done {
			return
		}
	}
}

// replayStep moves one batch from the head of the spool into Redis. It
// talks to Redis without holding r.mu: Record keeps appending to the
// spool's tail meanwhile (the spool is not empty, or Redis is taken for
// down), so the order holds and an ack never waits on a Redis that does not
// answer. Only the switch back to Redis, once the spool is empty, is made
// under r.mu, so that no record can slip into Redis ahead of a spooled one.
func (r *Recorder) replayStep(ctx context.Context) (done bool, moved int, err error) {
	entries, err := r.sp.Oldest(r.cfg.ReplayBatch)
	if err != nil {
		r.log.Error("read the intake spool", "error", err.Error())
		return true, 0, err
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if len(entries) == 0 {
		if err := r.p.Ping(cctx); err != nil {
			return true, 0, err
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.sp.Len() > 0 {
			return false, 0, nil // Record spooled meanwhile: replay that first
		}
		if r.down.CompareAndSwap(true, false) {
			r.log.Info("Redis answers again; intake records go to Redis")
		}
		return true, 0, nil
	}
	msgs := make([]konstruct.Message, 0, len(entries))
	for _, e := range entries {
		var m konstruct.Message
		if err := json.Unmarshal(e.Data, &m); err != nil {
			// Only this program writes the spool: a record that does not
			// decode is damaged; keeping it would block the rest.
			r.log.Error("dropping a damaged intake spool record", "seq", e.Seq, "error", err.Error())
			continue
		}
		msgs = append(msgs, m)
	}
	if len(msgs) > 0 {
		if err := r.p.AppendIntake(cctx, msgs); err != nil {
			return true, 0, err
		}
	}
	// Delete, and switch back to Redis when that emptied the spool (Redis
	// just took a batch), in one turn with Record: a record made after the
	// spool emptied goes to Redis, never behind it into the spool.
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.sp.Delete(entries); err != nil {
		// In Redis now but still spooled: the next replay sends them
		// again, and the router takes the second copies for duplicates.
		r.log.Error("delete replayed records from the intake spool", "error", err.Error())
		return true, len(msgs), err
	}
	r.cfg.Metrics.SpoolDepth(r.sp.Len())
	if r.sp.Len() == 0 && r.down.CompareAndSwap(true, false) {
		r.log.Info("Redis answers again; intake records go to Redis")
	}
	return r.sp.Len() == 0, len(msgs), nil
}
