package queue

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
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

// holdScript renews or takes a gateway's lease on an app's sockets. Leases
// that ran out are dropped first. A gateway that does not hold the app
// takes it only when asked to (acquire) and fewer than limit gateways hold
// it. It returns {held, other holders that are ready}.
//
//	KEYS: the app's hash; ARGV: now ms, id, ttl ms, limit, ready (0|1), acquire (0|1)
var holdScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local h = redis.call("HGETALL", KEYS[1])
local holders, ready, mine = 0, 0, false
for i = 1, #h, 2 do
  local exp, rdy = string.match(h[i+1], "^(%d+)|(%d)$")
  if not exp or tonumber(exp) <= now then
    redis.call("HDEL", KEYS[1], h[i])
  else
    holders = holders + 1
    if h[i] == ARGV[2] then mine = true elseif rdy == "1" then ready = ready + 1 end
  end
end
if not mine and (ARGV[6] ~= "1" or holders >= tonumber(ARGV[4])) then return {0, ready} end
redis.call("HSET", KEYS[1], ARGV[2], (now + tonumber(ARGV[3])) .. "|" .. ARGV[5])
redis.call("PEXPIRE", KEYS[1], 2 * tonumber(ARGV[3]))
return {1, ready}`)

// HoldApp renews the gateway's lease on an app's sockets (app is a stable
// name that is not the token), or takes it when acquire is set and fewer
// than limit gateways hold it; ready says the gateway has a socket of the
// app up. held reports whether the gateway holds the lease now; ready
// counts the other gateways holding it with a socket up.
func (q *Queue) HoldApp(ctx context.Context, app, id string, limit int, ttl time.Duration, acquire, ready bool) (held bool, readyOthers int, err error) {
	res, err := holdScript.Run(ctx, q.rdb, []string{q.keys.gatewayApp(app)},
		q.cfg.Now().UnixMilli(), id, ttl.Milliseconds(), limit, b01(ready), b01(acquire)).Int64Slice()
	if err != nil {
		return false, 0, unavailable("app lease", err)
	}
	return res[0] == 1, int(res[1]), nil
}

// ReleaseApp gives up the gateway's lease on an app's sockets.
func (q *Queue) ReleaseApp(ctx context.Context, app, id string) error {
	if err := q.rdb.HDel(ctx, q.keys.gatewayApp(app), id).Err(); err != nil {
		return unavailable("app lease", err)
	}
	return nil
}

// LeaveGateways removes the gateway from the live ones (it stops): the
// others share its apps at their next beat, not after its registration
// runs out. Its app leases are released by the caller.
func (q *Queue) LeaveGateways(ctx context.Context, id string) error {
	if err := q.rdb.ZRem(ctx, q.keys.gatewaysLive(), id).Err(); err != nil {
		return unavailable("gateway leave", err)
	}
	return nil
}

func b01(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
