package slacksim

import (
	"math"
	"time"
)

// bucket is a token bucket: rate tokens per second, up to burst.
type bucket struct {
	tokens float64
	last   time.Time
	rate   float64
	burst  float64
}

// take consumes one token, or returns how long until one is available.
func (b *bucket) take(now time.Time) time.Duration {
	b.tokens = math.Min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

type limit struct {
	perMinute float64
	burst     float64
	scope     string // "channel": per workspace and channel; "team": per workspace
}

// Slack's tiers, per method (https://api.slack.com/apis/rate-limits).
// Tier 2 ≈ 20/min, Tier 3 ≈ 50/min, Tier 4 ≈ 100/min; chat.postMessage is
// "special": about one per second per channel with short bursts allowed.
var limits = map[string]limit{
	"chat.postMessage":      {60, 6, "channel"},
	"chat.update":           {50, 20, "team"},
	"chat.delete":           {50, 20, "team"},
	"chat.postEphemeral":    {100, 50, "team"},
	"chat.startStream":      {20, 20, "team"},
	"chat.appendStream":     {100, 50, "team"},
	"chat.stopStream":       {20, 20, "team"},
	"conversations.replies": {50, 50, "team"},
	"conversations.history": {50, 50, "team"},
	"conversations.info":    {50, 50, "team"},
	"users.info":            {100, 100, "team"},
	"reactions.add":         {50, 20, "team"},
	"reactions.remove":      {50, 20, "team"},
}

// rateLimit returns the Retry-After seconds when the call is over its limit, else 0.
func (s *Server) rateLimit(c *call) int {
	if !s.rateLimits || c.w == nil {
		return 0
	}
	l, ok := limits[c.method]
	if !ok {
		return 0
	}
	key := c.method + "|" + c.w.spec.TeamID
	if l.scope == "channel" {
		key += "|" + c.get("channel")
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now, rate: l.perMinute / 60, burst: l.burst}
		s.buckets[key] = b
	}
	wait := b.take(now)
	if wait <= 0 {
		return 0
	}
	return max(1, int(math.Ceil(wait.Seconds())))
}
