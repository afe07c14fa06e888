package queue

import (
	"strings"
	"time"

	"github.com/konstruct/konstruct"
)

// The key layout: every key Konstruct keeps in Redis, who writes it, who
// reads it, how long it lives and its hash tag. Nothing else in the product
// formats a Redis key.
//
// Prefix rule: every key starts with redis.prefix (<p> below, "" by
// default), so that several installs or test runs share one Redis; a
// tenant's keys continue with its id in braces ({<t>}), so one tenant's
// state can be found, counted or removed alone. A post is
// <team>:<channel>:<ts>.
//
// Hash tags: braces in a key are literal — Redis Cluster hashes only what
// the first {…} holds, so keys with the same tag live in the same slot.
// Every multi-key step (a Lua script's KEYS and the keys it reaches from
// ARGV, a pipeline that must act as one) touches keys of one tag: a
// tenant's keys share {<t>}; the fair admission's share {fair}, the task
// dedupe key among them (enqueueScript takes it with the fair lists); a
// workspace's Slack budgets share {slack:<team>}; an LLM provider's slots
// {llm:<provider>}; the gateways' socket leases {gateways}. A key alone in
// its steps (the intake stream, the inflight index) needs no tag. Atomic
// steps are Lua scripts, never MULTI: one command, which Redis runs alone,
// which Cluster routes by its keys, and which redis.wait_replicas follows
// with a WAIT on the same connection (queue.go). TestKeySlots and the slot
// check every queue test runs with (export_test.go) hold this.
//
//	key                                      tag              type    written by          read by          TTL
//	<p>{<t>}:event:<event_id>                {<t>}            string  router (claim)      router           DedupeTTL (24 h)
//	<p>{<t>}:post:<team>:<channel>:<ts>      {<t>}            string  router (claim)      router           DedupeTTL (24 h)
//	<p>{<t>}:engaged:<channel>:<thread>      {<t>}            string  worker (answered)   router           the tenant's follow TTL, else threads.engaged_ttl
//	<p>{<t>}:ratelimit:<channel>             {<t>}            string  router (GCRA)       router           ≤ 1 min (redis_rate)
//	<p>{<t>}:ratelimit:<channel>:<user>      {<t>}            string  router (GCRA)       router           ≤ 1 min (redis_rate)
//	<p>{<t>}:ratenote:<channel>:<user>       {<t>}            string  router              router           the refusal's wait (≥ 1 s)
//	<p>{<t>}:tokens:day:<yyyymmdd>           {<t>}            string  worker (AddTokens)  router (budget)  48 h (a UTC day's LLM tokens)
//	<p>{<t>}:tokens:month:<yyyymm>           {<t>}            string  worker (AddTokens)  router (budget)  35 days (a UTC month's)
//	<p>{<t>}:note:<kind>:<yyyymmdd>:<team>:<user> {<t>}       string  router (NoteOnce)   router           25 h: one DM or budget note per person per UTC day
//	<p>{<t>}:stop:<team>:<channel>:<ts>      {<t>}            string  router (Stop click) worker (polls)   StopTTL (1 h)
//	<p>{<t>}:reply:<team>:<channel>:<ts>     {<t>}            hash    worker, janitor     worker, janitor  ReplyTTL (48 h)
//	… same …:lock                            {<t>}            string  worker, janitor     worker, janitor  LockTTL (45 s), extended while held
//	<p>replies:inflight                      none             zset    router, worker      janitor          none; members leave when done
//	<p>intake                                none             stream  gateway (record)    router (group)   none; entries deleted once routed
//	<p>{fair}:task:<t>:<team>:<channel>:<ts> {fair}           string  router (Enqueue)    router           TaskRetention (24 h): one reply task per post
//	<p>{fair}:ring                           {fair}           list    Enqueue, dispatch   dispatch         none (tenants with waiting jobs)
//	<p>{fair}:wait:<t>                       {fair}           list    Enqueue             dispatch         none (a tenant's waiting posts)
//	<p>{fair}:jobs                           {fair}           hash    Enqueue             dispatch         none; a post leaves when its task ends
//	<p>{fair}:admitted / {fair}:run          {fair}           zset / hash dispatch, Serve dispatch         none; entries leave when tasks end (or after 2 × TaskTimeout)
//	<p>{fair}:workers                        {fair}           hash    Serve (each 5 s)    dispatch         15 s per entry (checked by dispatch)
//	<p>{fair}:kick                           {fair}           list    Enqueue             dispatch         one element at most
//	<p>{fair}:avg_ms                         {fair}           string  worker              router           none (a moving average of reply durations)
//	<p>{llm:<provider>}:held                 {llm:<provider>} zset    worker (AcquireLLM) worker           30 s lease per slot, renewed while held
//	<p>{llm:<provider>}:wait                 {llm:<provider>} zset    worker (AcquireLLM) worker           1 s per waiting tenant, refreshed while it waits, removed at its grant
//	<p>{llm:<provider>}:served               {llm:<provider>} zset    worker (AcquireLLM) worker           tenant → its last grant; 10 min (the key and each entry)
//	<p>{slack:<team>}:budget:<method>[:<channel>] {slack:<team>} string router, worker     the same         ≤ a burst's time (GCRA, TakeSlack)
//	<p>{slack:<team>}:pause:<method>         {slack:<team>}   string  router, worker      the same         Slack's Retry-After (PauseSlack)
//	<p>{gateways}:live                       {gateways}       zset    gateway (each 2 s)  gateway          GatewayTTL per member (gateway.go)
//	<p>{gateways}:app:<app>                  {gateways}       hash    gateway             gateway          GatewayTTL per holder; <app> is a hash of the app token
//	asynq:{<p>replies}:…                     {<p>replies}     asynq   Enqueue, Serve      Serve, Inspect   asynq's own (tasks kept TaskRetention)
//
// The claim keys hold the event id that took them; the reply hash holds a
// konstruct.ReplyState; the inflight set scores each unfinished reply's
// post (konstruct.Post.String) by the Unix ms at which, without a
// heartbeat, the janitor may take it over.
type keys struct{ prefix string }

// tag is a hash tag: the key part Redis Cluster hashes.
func tag(s string) string { return "{" + s + "}" }

func (k keys) tenant(tenantID, kind string) string {
	return k.prefix + tag(tenantID) + ":" + kind + ":"
}

func postSuffix(p konstruct.Post) string { return p.TeamID + ":" + p.ChannelID + ":" + p.TS }

func (k keys) event(tenantID, eventID string) string { return k.tenant(tenantID, "event") + eventID }
func (k keys) post(p konstruct.Post) string          { return k.tenant(p.TenantID, "post") + postSuffix(p) }
func (k keys) engaged(tenantID, channelID, threadTS string) string {
	return k.tenant(tenantID, "engaged") + channelID + ":" + threadTS
}
func (k keys) rateLimit(tenantID, channelID string) string {
	return k.tenant(tenantID, "ratelimit") + channelID
}
func (k keys) rateLimitUser(tenantID, channelID, userID string) string {
	return k.tenant(tenantID, "ratelimit") + channelID + ":" + userID
}
func (k keys) rateNote(tenantID, channelID, userID string) string {
	return k.tenant(tenantID, "ratenote") + channelID + ":" + userID
}
func (k keys) tokensDay(tenantID string, at time.Time) string {
	return k.tenant(tenantID, "tokens") + "day:" + at.UTC().Format("20060102")
}
func (k keys) tokensMonth(tenantID string, at time.Time) string {
	return k.tenant(tenantID, "tokens") + "month:" + at.UTC().Format("200601")
}
func (k keys) note(tenantID, kind, teamID, userID string, at time.Time) string {
	return k.tenant(tenantID, "note") + kind + ":" + at.UTC().Format("20060102") + ":" + teamID + ":" + userID
}
func (k keys) stop(p konstruct.Post) string      { return k.tenant(p.TenantID, "stop") + postSuffix(p) }
func (k keys) reply(p konstruct.Post) string     { return k.tenant(p.TenantID, "reply") + postSuffix(p) }
func (k keys) replyLock(p konstruct.Post) string { return k.reply(p) + ":lock" }
func (k keys) inflight() string                  { return k.prefix + "replies:inflight" }
func (k keys) intake() string                    { return k.prefix + "intake" }

func (k keys) slackBudget(method, teamID, channelID string) string {
	s := k.prefix + tag("slack:"+teamID) + ":budget:" + method
	if channelID != "" {
		s += ":" + channelID
	}
	return s
}
func (k keys) slackPause(method, teamID string) string {
	return k.prefix + tag("slack:"+teamID) + ":pause:" + method
}

func (k keys) fair(name string) string { return k.prefix + tag("fair") + ":" + name }
func (k keys) task(p konstruct.Post) string {
	return k.fair("task") + ":" + p.TenantID + ":" + postSuffix(p)
}
func (k keys) fairRing() string       { return k.fair("ring") }
func (k keys) fairWaitPrefix() string { return k.fair("wait") + ":" }
func (k keys) fairWait(tenantID string) string {
	return k.fairWaitPrefix() + tenantID
}
func (k keys) fairJobs() string     { return k.fair("jobs") }
func (k keys) fairAdmitted() string { return k.fair("admitted") }
func (k keys) fairRun() string      { return k.fair("run") }
func (k keys) fairWorkers() string  { return k.fair("workers") }
func (k keys) fairKick() string     { return k.fair("kick") }
func (k keys) fairAvg() string      { return k.fair("avg_ms") }
func (k keys) llmHeld(provider string) string {
	return k.prefix + tag("llm:"+provider) + ":held"
}
func (k keys) llmWait(provider string) string {
	return k.prefix + tag("llm:"+provider) + ":wait"
}
func (k keys) llmServed(provider string) string {
	return k.prefix + tag("llm:"+provider) + ":served"
}
func (k keys) gatewaysLive() string         { return k.prefix + tag("gateways") + ":live" }
func (k keys) gatewayApp(app string) string { return k.prefix + tag("gateways") + ":app:" + app }

// Queue is the asynq queue of reply tasks.
func (k keys) queue() string { return k.prefix + "replies" }

// taskID is the asynq task id of the reply to a post: the twins and retries
// of one post, and a second daemon on the same app, all map to one task.
func taskID(p konstruct.Post) string { return "reply:" + p.String() }

// parsePost reverses konstruct.Post.String (the inflight set's members).
func parsePost(s string) (konstruct.Post, bool) {
	parts := strings.Split(s, ":")
	if len(parts) != 4 {
		return konstruct.Post{}, false
	}
	p := konstruct.Post{TenantID: parts[0], TeamID: parts[1], ChannelID: parts[2], TS: parts[3]}
	return p, p.Valid()
}
