package queue

import (
	"context"
	"math"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/konstruct/konstruct"
)

// SlackTier is the budget of one Slack Web API method: PerMinute on
// average, Burst at once. PerChannel budgets the method per workspace and
// channel (chat.postMessage) instead of per workspace.
type SlackTier struct {
	PerMinute  float64
	Burst      int
	PerChannel bool
}

// DefaultSlackTiers are Slack's published tiers for the methods Konstruct
// writes with (https://api.slack.com/apis/rate-limits): Tier 2 ≈ 20/min,
// Tier 3 ≈ 50/min, Tier 4 ≈ 100/min; chat.postMessage is about one per
// second per channel, with short bursts. slack.rate_limits overrides them.
var DefaultSlackTiers = map[string]SlackTier{
	"chat.postMessage":      {PerMinute: 60, Burst: 5, PerChannel: true},
	"chat.update":           {PerMinute: 50, Burst: 10},
	"chat.delete":           {PerMinute: 50, Burst: 10},
	"chat.postEphemeral":    {PerMinute: 100, Burst: 20},
	"chat.startStream":      {PerMinute: 20, Burst: 5},
	"chat.appendStream":     {PerMinute: 100, Burst: 20},
	"chat.stopStream":       {PerMinute: 20, Burst: 5},
	"conversations.replies": {PerMinute: 50, Burst: 10},
}

// budgetScript is GCRA (the algorithm redis_rate implements) with
// priorities, which redis_rate does not have: a write is allowed only if,
// after it, at least `reserve` writes of the burst remain for writes of
// higher priority. A method paused by a 429 (its pause key) allows nothing
// until the pause ends. It returns {allowed, wait_ms}.
//
//	KEYS[1] the method's theoretical arrival time (ms); KEYS[2] its pause
//	ARGV    now_ms, interval_ms (60000 / per-minute), burst, reserve
var budgetScript = redis.NewScript(`
local pause = redis.call("PTTL", KEYS[2])
if pause > 0 then return {0, pause} end
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local reserve = tonumber(ARGV[4])
local tat = tonumber(redis.call("GET", KEYS[1]) or "0")
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval + reserve * interval
if allow_at > now then return {0, math.ceil(allow_at - now)} end
redis.call("SET", KEYS[1], new_tat, "PX", math.ceil(new_tat - now) + 1000)
return {1, 0}`)

// reserveFor is how much of a method's burst a write of priority p must
// leave to the higher priorities: a final answer may take the last write,
// a placeholder must leave one, a streaming edit a third of the burst.
func reserveFor(p konstruct.Priority, burst int) int {
	switch p {
	case konstruct.PriorityFinal:
		return 0
	case konstruct.PriorityPlaceholder:
		return min(1, burst-1)
	default:
		return max(1, burst/3)
	}
}

// TakeSlack takes one write of method in the workspace (and channel, for a
// method budgeted per channel) from the budget every process of the
// install shares, at priority p. wait is 0 when the write may go now, else
// how long until it might (the write is not taken). A method Slack paused
// with a 429 (PauseSlack) waits out the pause at every priority. Methods
// without a tier are not budgeted.
func (q *Queue) TakeSlack(ctx context.Context, teamID, channelID, method string, p konstruct.Priority) (wait time.Duration, err error) {
	tier, ok := q.tiers[method]
	if !ok {
		return 0, nil
	}
	scope := ""
	if tier.PerChannel {
		scope = channelID
	}
	now := q.cfg.Now().UnixMilli()
	interval := int64(math.Ceil(60000 / tier.PerMinute))
	res, err := budgetScript.Run(ctx, q.rdb, []string{q.keys.slackBudget(method, teamID, scope), q.keys.slackPause(method, teamID)},
		now, interval, tier.Burst, reserveFor(p, tier.Burst)).Int64Slice()
	if err != nil {
		return 0, unavailable("slack budget", err)
	}
	if res[0] == 1 {
		return 0, nil
	}
	return time.Duration(max(res[1], 1)) * time.Millisecond, nil
}

// PauseSlack records Slack's Retry-After for a method in a workspace: every
// process holds that method back until it passed (no retry waves).
func (q *Queue) PauseSlack(ctx context.Context, teamID, method string, d time.Duration) error {
	d = max(d, time.Second)
	// Extend a pause, never shorten it: SET … GT needs Redis 7; PX with the
	// longer of the two is what it means.
	key := q.keys.slackPause(method, teamID)
	left, err := q.rdb.PTTL(ctx, key).Result()
	if err != nil {
		return unavailable("slack pause", err)
	}
	if left >= d {
		return nil
	}
	if err := q.rdb.Set(ctx, key, 1, d).Err(); err != nil {
		return unavailable("slack pause", err)
	}
	return nil
}
