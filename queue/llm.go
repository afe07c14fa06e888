package queue

import (
	"context"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// LLM slots: a provider's max_concurrency is shared by every process of
// the install, and shared fairly between the tenants that want it now. A
// reserve of a tenth of the slots is kept for tenants that start asking,
// who find one at once. A tenant may take a free slot when it holds less
// than its share (the other slots divided among the tenants holding or
// waiting) and no other waiting tenant holds fewer: when a slot frees while
// two tenants flood and a third asks, the third gets it; between two
// waiting tenants holding as many, the one served least recently goes
// first. Past its share a
// tenant may still take a free slot when no other tenant waits and the
// reserve stays free: the slots are not left idle behind the shares.
//
// A tenant counts as waiting only while one of its requests waits (each
// refreshes its entry at every try; a grant removes it): a tenant that was
// served at once is not taken for a waiter for seconds after.
//
// Keys (keys.go): <p>{llm:<provider>}:held (tenant|holder → lease end),
// <p>{llm:<provider>}:wait (tenant → until when it counts as waiting) and
// <p>{llm:<provider>}:served (tenant → its last grant).

// slotScript tries to take a slot. KEYS: held, wait, served. ARGV: now ms, tenant,
// holder id, slots, lease ms, reserve. It returns 1 when taken.
var slotScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local tenant, slots, reserve = ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[6])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now)
redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", now)
redis.call("ZREMRANGEBYSCORE", KEYS[3], "-inf", now - 600000)
local function wait()
  redis.call("ZADD", KEYS[2], now + 1000, tenant)
  return 0
end
local held = redis.call("ZRANGE", KEYS[1], 0, -1)
if #held >= slots then return wait() end
local count, busy = {}, 0
for _, m in ipairs(held) do
  local t = string.match(m, "^([^|]*)|")
  if count[t] == nil then count[t] = 0; busy = busy + 1 end
  count[t] = count[t] + 1
end
local mine = count[tenant] or 0
if count[tenant] == nil then busy = busy + 1 end
local others = false
local last = tonumber(redis.call("ZSCORE", KEYS[3], tenant) or "0")
for _, t in ipairs(redis.call("ZRANGE", KEYS[2], 0, -1)) do
  if t ~= tenant then
    others = true
    if count[t] == nil then count[t] = 0; busy = busy + 1 end
    if count[t] < mine then return wait() end
    if count[t] == mine and tonumber(redis.call("ZSCORE", KEYS[3], t) or "0") < last then return wait() end
  end
end
local share = math.max(1, math.floor((slots - reserve) / busy))
if mine >= share and (others or slots - #held - 1 < reserve) then return wait() end
redis.call("ZADD", KEYS[1], now + tonumber(ARGV[5]), tenant .. "|" .. ARGV[3])
redis.call("ZREM", KEYS[2], tenant)
redis.call("ZADD", KEYS[3], now, tenant)
redis.call("PEXPIRE", KEYS[3], 600000)
return 1`)

// slotLease is how long a slot stays held without renewal (a process that
// died gives its slots back after it).
const slotLease = 30 * time.Second

// AcquireLLM waits for one of a provider's slots (slots in all, shared by
// every process) for a tenant, fairly, until ctx ends. release gives it
// back; the slot is renewed while held.
func (q *Queue) AcquireLLM(ctx context.Context, provider, tenant string, slots int) (release func(), err error) {
	held, wait, served := q.keys.llmHeld(provider), q.keys.llmWait(provider), q.keys.llmServed(provider)
	holder := strconv.FormatUint(rand.Uint64(), 36)
	for {
		n, err := slotScript.Run(ctx, q.rdb, []string{held, wait, served},
			q.cfg.Now().UnixMilli(), tenant, holder, slots, slotLease.Milliseconds(), slots/10).Int()
		if err != nil {
			return nil, unavailable("llm slot", err)
		}
		if n == 1 {
			break
		}
		// Poll: a release frees a slot for whoever asks next and may.
		t := time.NewTimer(50*time.Millisecond + rand.N(50*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	member := tenant + "|" + holder
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(slotLease / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = q.rdb.ZAddXX(rctx, held, redis.Z{Score: float64(q.cfg.Now().Add(slotLease).UnixMilli()), Member: member}).Err()
				cancel()
			}
		}
	}()
	return func() {
		close(stop)
		<-done
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = q.rdb.ZRem(rctx, held, member).Err()
	}, nil
}

// LLMWaiting lists the tenants waiting now for one of a provider's slots.
func (q *Queue) LLMWaiting(ctx context.Context, provider string) ([]string, error) {
	ts, err := q.rdb.ZRangeByScore(ctx, q.keys.llmWait(provider), &redis.ZRangeBy{
		Min: strconv.FormatInt(q.cfg.Now().UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, unavailable("llm waiting", err)
	}
	return ts, nil
}
