package queue

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/konstruct/konstruct"
)

// Fair admission. A reply job first waits in its tenant's list; a
// dispatcher (in every Serve, any of them may act: each step is one atomic
// script) admits jobs into asynq only while the install's workers have
// room, taking tenants in turn and giving each busy tenant an equal share
// of the workers — busy meaning it has a job waiting or running now — with
// a reserve kept for a tenant that has nothing running. So a tenant's
// backlog never sits in front of another tenant's question: the asynq
// queue holds no more than the workers can start at once.
//
// Keys (keys.go), all of hash tag {fair}: <p>{fair}:ring (tenants with
// waiting jobs, in turn order), <p>{fair}:wait:<t> (a tenant's waiting
// posts, oldest first), <p>{fair}:jobs (post → job), <p>{fair}:admitted
// (tenant|post → when admitted), <p>{fair}:run (tenant → jobs admitted and
// not finished), <p>{fair}:workers (process → capacity|expiry), and the
// dedupe key <p>{fair}:task:<t>:<post>.

// enqueueScript queues a job unless its post has one already.
//
//	KEYS: task key, wait list, ring, jobs, kick
//	ARGV: tenant, post, job, retention ms
var enqueueScript = redis.NewScript(`
if not redis.call("SET", KEYS[1], "1", "NX", "PX", ARGV[4]) then return 0 end
redis.call("HSET", KEYS[4], ARGV[2], ARGV[3])
redis.call("RPUSH", KEYS[2], ARGV[2])
if not redis.call("LPOS", KEYS[3], ARGV[1]) then redis.call("RPUSH", KEYS[3], ARGV[1]) end
redis.call("LPUSH", KEYS[5], "1")
redis.call("LTRIM", KEYS[5], 0, 0)
return 1`)

// admitScript admits up to ARGV[4] jobs, fairly. It returns the admitted
// posts' jobs.
//
//	KEYS: ring, admitted, run, jobs, workers; wait lists are <p>{fair}:wait:<t>
//	(ARGV[5] is <p>{fair}:wait:, of the same hash tag as the KEYS)
//	ARGV: now ms, expired-before ms (admitted that long ago without finishing: dropped),
//	      reserve (percent of the capacity kept for tenants with nothing running), max, wait prefix
var admitScript = redis.NewScript(`
local now = tonumber(ARGV[1])
-- capacity: the live workers' concurrency; dead processes' entries go
local cap = 0
local w = redis.call("HGETALL", KEYS[5])
for i = 1, #w, 2 do
  local n, exp = string.match(w[i+1], "^(%d+)|(%d+)$")
  if n and tonumber(exp) > now then cap = cap + tonumber(n) else redis.call("HDEL", KEYS[5], w[i]) end
end
-- jobs admitted long ago whose end was never reported
for _, m in ipairs(redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", ARGV[2])) do
  redis.call("ZREM", KEYS[2], m)
  local t = string.match(m, "^([^|]*)|")
  if t and tonumber(redis.call("HINCRBY", KEYS[3], t, -1)) <= 0 then redis.call("HDEL", KEYS[3], t) end
end
local total = redis.call("ZCARD", KEYS[2])
if total >= cap then return {} end
local ring = redis.call("LRANGE", KEYS[1], 0, -1)
if #ring == 0 then return {} end
-- busy tenants: waiting or running
local busy, seen = 0, {}
for _, t in ipairs(ring) do if not seen[t] then seen[t] = true; busy = busy + 1 end end
for _, t in ipairs(redis.call("HKEYS", KEYS[3])) do if not seen[t] then seen[t] = true; busy = busy + 1 end end
local reserve = math.min(math.max(1, math.floor(cap * tonumber(ARGV[3]) / 100)), math.max(cap - 1, 0))
local share = math.max(1, math.floor((cap - reserve) / busy))
local out, max, idle = {}, tonumber(ARGV[4]), 0
while total < cap and #out < max and idle < #ring do
  local t = redis.call("LMOVE", KEYS[1], KEYS[1], "LEFT", "RIGHT")
  if not t then break end
  local r = tonumber(redis.call("HGET", KEYS[3], t) or "0")
  local ok = r < share and (r == 0 or total < cap - reserve)
  local admitted = false
  if ok then
    local post = redis.call("LPOP", ARGV[5] .. t)
    if post then
      local job = redis.call("HGET", KEYS[4], post)
      if job then
        redis.call("ZADD", KEYS[2], now, t .. "|" .. post)
        redis.call("HINCRBY", KEYS[3], t, 1)
        total = total + 1
        table.insert(out, job)
        admitted = true
      end
    end
    if redis.call("LLEN", ARGV[5] .. t) == 0 then redis.call("LREM", KEYS[1], 0, t) end
  end
  if admitted then idle = 0 else idle = idle + 1 end
  ring = redis.call("LRANGE", KEYS[1], 0, -1)
end
return out`)

// finishScript reports the end of an admitted job: its room goes back.
//
//	KEYS: admitted, run, jobs; ARGV: tenant|post, tenant, post
var finishScript = redis.NewScript(`
redis.call("HDEL", KEYS[3], ARGV[3])
if redis.call("ZREM", KEYS[1], ARGV[1]) == 1 then
  if tonumber(redis.call("HINCRBY", KEYS[2], ARGV[2], -1)) <= 0 then redis.call("HDEL", KEYS[2], ARGV[2]) end
end
return 1`)

// enqueueFair queues a job in its tenant's waiting list; ECONFLICT when
// its post has a job already.
func (q *Queue) enqueueFair(ctx context.Context, post konstruct.Post, payload []byte) error {
	n, err := enqueueScript.Run(ctx, q.rdb,
		[]string{q.keys.task(post), q.keys.fairWait(post.TenantID), q.keys.fairRing(), q.keys.fairJobs(), q.keys.fairKick()},
		post.TenantID, post.String(), payload, TaskRetention.Milliseconds()).Int()
	if err != nil {
		return unavailable("enqueue reply", err)
	}
	if n == 0 {
		return konstruct.Errorf(konstruct.ECONFLICT, "the post already has a reply task")
	}
	return nil
}

// admittedLimit bounds the jobs one dispatch step admits.
const admittedLimit = 64

// fairReservePercent of the workers is kept for tenants with nothing
// running, so that a quiet tenant's question starts at once even while
// others flood.
const fairReservePercent = 10

// dispatch admits waiting jobs into asynq until none is left to admit now,
// and returns how many it admitted.
func (q *Queue) dispatch(ctx context.Context) (int, error) {
	now := q.cfg.Now()
	jobs, err := admitScript.Run(ctx, q.rdb,
		[]string{q.keys.fairRing(), q.keys.fairAdmitted(), q.keys.fairRun(), q.keys.fairJobs(), q.keys.fairWorkers()},
		now.UnixMilli(), now.Add(-2*TaskTimeout).UnixMilli(), fairReservePercent, admittedLimit, q.keys.fairWaitPrefix()).StringSlice()
	if err != nil {
		return 0, unavailable("admit reply tasks", err)
	}
	for _, raw := range jobs {
		var job konstruct.ReplyJob
		if err := json.Unmarshal([]byte(raw), &job); err != nil {
			q.log.Error("a queued reply job does not decode; dropped", "error", err.Error())
			continue
		}
		if err := q.enqueueTask(ctx, job, []byte(raw)); err != nil && konstruct.ErrorCode(err) != konstruct.ECONFLICT {
			// Admitted but not in asynq: give the room back and the job to
			// its tenant's list, at the front.
			q.unadmit(context.WithoutCancel(ctx), job.Message.Post())
			return 0, err
		}
	}
	return len(jobs), nil
}

// unadmitScript puts an admitted job back at the front of its tenant's
// waiting list.
//
//	KEYS: admitted, run, wait list, ring; ARGV: tenant|post, tenant, post
var unadmitScript = redis.NewScript(`
if redis.call("ZREM", KEYS[1], ARGV[1]) == 1 then
  if tonumber(redis.call("HINCRBY", KEYS[2], ARGV[2], -1)) <= 0 then redis.call("HDEL", KEYS[2], ARGV[2]) end
  redis.call("LPUSH", KEYS[3], ARGV[3])
  if not redis.call("LPOS", KEYS[4], ARGV[2]) then redis.call("LPUSH", KEYS[4], ARGV[2]) end
end
return 1`)

func (q *Queue) unadmit(ctx context.Context, post konstruct.Post) {
	_ = unadmitScript.Run(ctx, q.rdb, []string{q.keys.fairAdmitted(), q.keys.fairRun(), q.keys.fairWait(post.TenantID), q.keys.fairRing()},
		post.TenantID+"|"+post.String(), post.TenantID, post.String()).Err()
}

// finish gives an admitted job's room back once its task ended (done, or
// failed for good).
func (q *Queue) finish(ctx context.Context, post konstruct.Post) {
	if err := finishScript.Run(ctx, q.rdb, []string{q.keys.fairAdmitted(), q.keys.fairRun(), q.keys.fairJobs()},
		post.TenantID+"|"+post.String(), post.TenantID, post.String()).Err(); err != nil {
		q.log.Warn("report a finished reply task", "error", err.Error())
	}
}

// dispatcher registers this process's workers and admits jobs as room
// appears, until ctx ends: woken at once by an enqueue (the kick list),
// and every 250 ms anyway (a finished task frees room too).
func (q *Queue) dispatcher(ctx context.Context, concurrency int) {
	host, _ := os.Hostname()
	id := host + ":" + strconv.Itoa(os.Getpid()) + ":" + strconv.FormatUint(rand.Uint64(), 36)
	register := func() {
		exp := q.cfg.Now().Add(15 * time.Second).UnixMilli()
		_ = q.rdb.HSet(ctx, q.keys.fairWorkers(), id, strconv.Itoa(concurrency)+"|"+strconv.FormatInt(exp, 10)).Err()
	}
	defer func() { _ = q.rdb.HDel(context.WithoutCancel(ctx), q.keys.fairWorkers(), id).Err() }()
	register()
	last := time.Now()
	failures := 0
	for ctx.Err() == nil {
		if time.Since(last) > 5*time.Second {
			register()
			last = time.Now()
		}
		n, err := q.dispatch(ctx)
		if err != nil {
			failures++
			if failures%20 == 1 && ctx.Err() == nil {
				q.log.Warn("dispatch reply tasks", "error", err.Error())
			}
			sleepCtx(ctx, min(time.Duration(failures)*100*time.Millisecond, 2*time.Second))
			continue
		}
		failures = 0
		if n == admittedLimit {
			continue
		}
		// Wait for an enqueue (or a finished task: poll) without holding a
		// connection longer than needed.
		// BLPOP with a fractional timeout (go-redis' BLPop rounds to 1 s).
		err = q.rdb.Do(ctx, "BLPOP", q.keys.fairKick(), "0.25").Err()
		if err != nil && !errors.Is(err, redis.Nil) && ctx.Err() == nil {
			sleepCtx(ctx, 250*time.Millisecond)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// waiting reports whether a post's job waits for admission.
func (q *Queue) waiting(ctx context.Context, post konstruct.Post) (bool, error) {
	ok, err := q.rdb.HExists(ctx, q.keys.fairJobs(), post.String()).Result()
	if err != nil {
		return false, unavailable("task state", err)
	}
	return ok, nil
}

// enqueueTask puts an admitted job into asynq.
func (q *Queue) enqueueTask(ctx context.Context, job konstruct.ReplyJob, payload []byte) error {
	_, err := q.client.EnqueueContext(ctx, asynq.NewTask(konstruct.TaskReplyGenerate, payload),
		asynq.TaskID(taskID(job.Message.Post())),
		asynq.Queue(q.keys.queue()),
		asynq.MaxRetry(TaskMaxRetry),
		asynq.Retention(TaskRetention),
		asynq.Timeout(TaskTimeout),
	)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask):
		return konstruct.Errorf(konstruct.ECONFLICT, "the post already has a reply task")
	case err != nil:
		return unavailable("enqueue reply", err)
	}
	return nil
}

// Jobs lists the reply jobs queued and not finished: waiting for
// admission, or admitted and not done.
func (q *Queue) Jobs(ctx context.Context) ([]konstruct.ReplyJob, error) {
	vals, err := q.rdb.HVals(ctx, q.keys.fairJobs()).Result()
	if err != nil {
		return nil, unavailable("list reply jobs", err)
	}
	out := make([]konstruct.ReplyJob, 0, len(vals))
	for _, v := range vals {
		var j konstruct.ReplyJob
		if json.Unmarshal([]byte(v), &j) == nil {
			out = append(out, j)
		}
	}
	return out, nil
}

// avgScript folds a reply's duration into the moving average the wait
// estimate uses. KEYS: avg; ARGV: ms.
var avgScript = redis.NewScript(`
local avg = tonumber(redis.call("GET", KEYS[1]) or "0")
local d = tonumber(ARGV[1])
if avg == 0 then avg = d else avg = avg * 0.9 + d * 0.1 end
redis.call("SET", KEYS[1], math.floor(avg))
return 1`)

// ObserveReply folds how long a reply took to generate into the moving
// average EstimateWait uses.
func (q *Queue) ObserveReply(ctx context.Context, d time.Duration) {
	if err := avgScript.Run(ctx, q.rdb, []string{q.keys.fairAvg()}, d.Milliseconds()).Err(); err != nil {
		q.log.Debug("observe reply duration", "error", err.Error())
	}
}

// estimateScript is how long a tenant's next job would wait for a worker:
// the jobs it has waiting, over its share of the workers, times the average
// reply. KEYS: ring, run, workers, avg, the tenant's wait list; ARGV: now
// ms, tenant, reserve percent. It returns milliseconds.
var estimateScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local cap = 0
local w = redis.call("HGETALL", KEYS[3])
for i = 1, #w, 2 do
  local n, exp = string.match(w[i+1], "^(%d+)|(%d+)$")
  if n and tonumber(exp) > now then cap = cap + tonumber(n) end
end
if cap == 0 then return -1 end
local busy, seen = 0, {}
for _, t in ipairs(redis.call("LRANGE", KEYS[1], 0, -1)) do if not seen[t] then seen[t] = true; busy = busy + 1 end end
for _, t in ipairs(redis.call("HKEYS", KEYS[2])) do if not seen[t] then seen[t] = true; busy = busy + 1 end end
if not seen[ARGV[2]] then busy = busy + 1 end
local reserve = math.min(math.max(1, math.floor(cap * tonumber(ARGV[3]) / 100)), math.max(cap - 1, 0))
local share = math.max(1, math.floor((cap - reserve) / busy))
local running = tonumber(redis.call("HGET", KEYS[2], ARGV[2]) or "0")
local waiting = redis.call("LLEN", KEYS[5])
local ahead = running + waiting + 1 - share
if ahead <= 0 then return 0 end
local avg = tonumber(redis.call("GET", KEYS[4]) or "0")
return math.ceil(ahead / share) * avg`)

// EstimateWait is how long a new job of the tenant would wait for a
// worker, from its backlog, its share of the workers and the average reply
// (0 when it would start at once; 0 too when no worker has registered yet).
func (q *Queue) EstimateWait(ctx context.Context, tenantID string) (time.Duration, error) {
	ms, err := estimateScript.Run(ctx, q.rdb,
		[]string{q.keys.fairRing(), q.keys.fairRun(), q.keys.fairWorkers(), q.keys.fairAvg(), q.keys.fairWait(tenantID)},
		q.cfg.Now().UnixMilli(), tenantID, fairReservePercent).Int64()
	if err != nil {
		return 0, unavailable("estimate wait", err)
	}
	return time.Duration(max(ms, 0)) * time.Millisecond, nil
}
