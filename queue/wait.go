package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotReplicated is the error of a write fewer replicas confirmed than
// redis.wait_replicas asks, within the wait's timeout: the master has it,
// but a failover now could lose it, so it does not count. Its caller tries
// again, as after any Redis error (every step is idempotent).
var ErrNotReplicated = errors.New("redis: the write was not confirmed by enough replicas")

// replicaWait makes every write wait for n replicas: a WAIT n timeout
// pipelined behind it, on the connection that wrote (WAIT counts the
// replicas that acknowledged that connection's last write). A command on
// its own becomes a pipeline of two, so it still costs one round trip, plus
// the replica's acknowledgement.
//
// Reads need no WAIT, and blocking commands (XREADGROUP BLOCK, BLPOP) would
// hold it; their effect (a stream's read position, a wake-up) is
// re-derived after a failover anyway. MULTI transactions cannot carry a
// WAIT (it would run inside EXEC): the queue uses Lua scripts instead, and
// a transaction is refused here.
type replicaWait struct {
	rdb     redis.UniversalClient
	n       int
	timeout time.Duration
}

// inWaitPipeline marks the pipeline replicaWait made of a single command.
type inWaitPipeline struct{}

func (h *replicaWait) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *replicaWait) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !needsWait(cmd) || ctx.Value(inWaitPipeline{}) != nil {
			return next(ctx, cmd)
		}
		pctx := context.WithValue(ctx, inWaitPipeline{}, true)
		_, _ = h.rdb.Pipelined(pctx, func(p redis.Pipeliner) error { return p.Process(pctx, cmd) })
		return cmd.Err()
	}
}

func (h *replicaWait) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "multi" {
			err := errors.New("queue: a MULTI transaction cannot wait for replicas (redis.wait_replicas): use a Lua script")
			for _, c := range cmds {
				c.SetErr(err)
			}
			return err
		}
		write := false
		for _, c := range cmds {
			write = write || needsWait(c)
		}
		if !write {
			return next(ctx, cmds)
		}
		wait := redis.NewIntCmd(ctx, "wait", h.n, h.timeout.Milliseconds())
		all := make([]redis.Cmder, 0, len(cmds)+1)
		all = append(append(all, cmds...), wait)
		err := next(ctx, all)
		if n, werr := wait.Result(); werr == nil && n < int64(h.n) {
			err = fmt.Errorf("%w: %d of %d within %v", ErrNotReplicated, n, h.n, h.timeout)
			for _, c := range cmds {
				if c.Err() == nil || errors.Is(c.Err(), redis.Nil) {
					c.SetErr(err)
				}
			}
		}
		return err
	}
}

// needsWait reports whether a command may write and returns without
// blocking: everything but the reads and blocking commands listed (an
// unknown command counts as a write).
func needsWait(cmd redis.Cmder) bool {
	return !noWait[cmd.Name()]
}

var noWait = map[string]bool{}

func init() {
	for _, name := range []string{
		// reads
		"get", "mget", "exists", "ttl", "pttl", "type", "strlen", "getrange",
		"hget", "hmget", "hgetall", "hexists", "hkeys", "hvals", "hlen", "hscan", "hstrlen",
		"zrange", "zrangebyscore", "zrevrange", "zrevrangebyscore", "zcard", "zcount", "zscore", "zmscore", "zrank", "zrevrank", "zscan",
		"lrange", "llen", "lindex", "lpos",
		"smembers", "sismember", "smismember", "scard", "sscan", "srandmember",
		"xlen", "xrange", "xrevrange", "xpending", "xinfo",
		"scan", "keys", "dbsize", "randomkey", "memory", "object", "dump",
		"evalsha_ro", "eval_ro", "fcall_ro",
		// the connection and the server
		"ping", "echo", "info", "config", "client", "command", "time", "role", "hello", "auth", "select",
		"readonly", "readwrite", "cluster", "sentinel", "script", "slowlog", "latency", "debug", "quit",
		"wait", "waitaof",
		// blocking: a WAIT behind them would wait for them
		"blpop", "brpop", "blmove", "brpoplpush", "blmpop", "bzpopmin", "bzpopmax", "bzmpop", "xread", "xreadgroup",
		// pub/sub
		"publish", "spublish", "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe",
	} {
		noWait[name] = true
	}
}
