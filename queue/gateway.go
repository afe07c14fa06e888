package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/konstruct/konstruct"
)

// Gateways share the apps' sockets through leases (bot/shard.go decides
// who should hold what; this is the record of it). Keys (keys.go), of hash
// tag {gateways}: <p>{gateways}:live (gateway id → Unix ms it is live
// until) and <p>{gateways}:app:<app> (gateway id → "<until ms>|<ready>"
// for each gateway holding the app's sockets; ready is 1 once one of its
// sockets is up).

// beatScript registers a gateway as live until now + ttl, forgets the
// gateways whose registration ran out, and returns the live ones.
//
//	KEYS: live; ARGV: now ms, id, ttl ms
var beatScript = redis.NewScript(`
local now = tonumber(ARGV[1])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now)
redis.call("ZADD", KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
return redis.call("ZRANGE", KEYS[1], 0, -1)`)

// GatewayBeat registers the gateway id as live for ttl and returns every
// live gateway's id (its own included), sorted.
func (q *Queue) GatewayBeat(ctx context.Context, id string, ttl time.Duration) ([]string, error) {
	live, err := beatScript.Run(ctx, q.rdb, []string{q.keys.gatewaysLive()}, q.cfg.Now().UnixMilli(), id, ttl.Milliseconds()).StringSlice()
	if err != nil {
		return nil, unavailable("gateway heartbeat", err)
	}
	return live, nil
}

// holdScript renews, takes or gives up a gateway's leases on apps'
// sockets, one app per KEY (every app hash shares the {gateways} tag).
// Leases that ran out are dropped first. A gateway that does not hold an
// app takes it only when asked to (acquire) and fewer than limit gateways
// hold it. For each app it returns held (0|1) and the other holders that
// are ready.
//
//	KEYS: the apps' hashes; ARGV: now ms, id, ttl ms, limit, then per app
//	one flag string: a (acquire), r (ready), x (release), or "-"
var holdScript = redis.NewScript(`
local now, id, ttl, limit = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for k, key in ipairs(KEYS) do
  local flags = ARGV[4 + k]
  if string.find(flags, "x", 1, true) then
    redis.call("HDEL", key, id)
    table.insert(out, 0); table.insert(out, 0)
  else
    local h = redis.call("HGETALL", key)
    local holders, ready, mine = 0, 0, false
    for i = 1, #h, 2 do
      local exp, rdy = string.match(h[i+1], "^(%d+)|(%d)$")
      if not exp or tonumber(exp) <= now then
        redis.call("HDEL", key, h[i])
      else
        holders = holders + 1
        if h[i] == id then mine = true elseif rdy == "1" then ready = ready + 1 end
      end
    end
    local acquire = string.find(flags, "a", 1, true) ~= nil
    if mine or (acquire and holders < limit) then
      local r = string.find(flags, "r", 1, true) and "1" or "0"
      redis.call("HSET", key, id, (now + ttl) .. "|" .. r)
      redis.call("PEXPIRE", key, 2 * ttl)
      table.insert(out, 1)
    else
      table.insert(out, 0)
    end
    table.insert(out, ready)
  end
end
return out`)

// HoldApps renews, takes or gives up the gateway's leases on apps'
// sockets, in one round trip (konstruct.AppLease says how, per app).
func (q *Queue) HoldApps(ctx context.Context, id string, limit int, ttl time.Duration, apps []konstruct.AppLease) ([]konstruct.AppHeld, error) {
	if len(apps) == 0 {
		return nil, nil
	}
	ks := make([]string, len(apps))
	args := []any{q.cfg.Now().UnixMilli(), id, ttl.Milliseconds(), limit}
	for i, a := range apps {
		ks[i] = q.keys.gatewayApp(a.App)
		flags := "-"
		if a.Release {
			flags += "x"
		}
		if a.Acquire {
			flags += "a"
		}
		if a.Ready {
			flags += "r"
		}
		args = append(args, flags)
	}
	res, err := holdScript.Run(ctx, q.rdb, ks, args...).Int64Slice()
	if err != nil || len(res) != 2*len(apps) {
		if err == nil {
			err = fmt.Errorf("%d answers for %d apps", len(res)/2, len(apps))
		}
		return nil, unavailable("app leases", err)
	}
	out := make([]konstruct.AppHeld, len(apps))
	for i := range apps {
		out[i] = konstruct.AppHeld{Held: res[2*i] == 1, ReadyOthers: int(res[2*i+1])}
	}
	return out, nil
}

// LeaveGateways removes the gateway from the live ones (it stops): the
// others share its apps at their next beat, not after its registration
// runs out. Its app leases are released by the caller (HoldApps).
func (q *Queue) LeaveGateways(ctx context.Context, id string) error {
	if err := q.rdb.ZRem(ctx, q.keys.gatewaysLive(), id).Err(); err != nil {
		return unavailable("gateway leave", err)
	}
	return nil
}
