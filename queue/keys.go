package queue

import (
	"strings"

	"github.com/konstruct/konstruct"
)

// The key layout: every key Konstruct keeps in Redis, who writes it, who
// reads it and how long it lives. Nothing else in the product formats a
// Redis key. Prefix rule: every key starts with redis.prefix ({p} below,
// "" by default), so that several installs or test runs share one Redis;
// a tenant's keys continue with its id ({t}), so one tenant's state can be
// found, counted or removed alone. A post is {team}:{channel}:{ts}.
//
//	key                                  type    written by         read by         TTL
//	{p}{t}:event:{event_id}              string  router (claim)     router          DedupeTTL (24 h)
//	{p}{t}:post:{team}:{channel}:{ts}    string  router (claim)     router          DedupeTTL (24 h)
//	{p}{t}:engaged:{channel}:{thread}    string  worker (answered)  router          threads.engaged_ttl
//	{p}{t}:ratelimit:{channel}           string  router (GCRA)      router          ≤ 1 min (redis_rate)
//	{p}{t}:ratelimit:{channel}:{user}    string  router (GCRA)      router          ≤ 1 min (redis_rate)
//	{p}{t}:ratenote:{channel}:{user}     string  router             router          the refusal's wait (≥ 1 s)
//	{p}{t}:reply:{team}:{channel}:{ts}   hash    worker, janitor    worker, janitor ReplyTTL (48 h)
//	… same …:lock                        string  worker, janitor    worker, janitor LockTTL (45 s), extended while held
//	{p}replies:inflight                  zset    router, worker     janitor         none; members leave when done
//	{p}intake                            stream  gateway (record)   router (group)  none; entries deleted once routed
//	{p}{t}:task:{team}:{channel}:{ts}    string  router (Enqueue)   router          TaskRetention (24 h): one reply task per post
//	{p}fair:ring                         list    Enqueue, dispatch  dispatch        none (tenants with waiting jobs)
//	{p}fair:wait:{t}                     list    Enqueue            dispatch        none (a tenant's waiting posts)
//	{p}fair:jobs                         hash    Enqueue            dispatch        none; a post leaves when its task ends
//	{p}fair:admitted / fair:run          zset / hash dispatch, Serve dispatch       none; entries leave when tasks end (or after 2 × TaskTimeout)
//	{p}fair:workers                      hash    Serve (each 5 s)   dispatch        15 s per entry (checked by dispatch)
//	{p}fair:kick                         list    Enqueue            dispatch        one element at most
//	{p}fair:avg_ms                       string  worker             router          none (a moving average of reply durations)
//	{p}llm:{provider}:held               zset    worker (AcquireLLM) worker          30 s lease per slot, renewed while held
//	{p}llm:{provider}:wait               zset    worker (AcquireLLM) worker          2 s per waiting tenant, refreshed while it waits
//	{p}slack:{method}:{team}[:{channel}] string  router, worker     the same        ≤ a burst's time (GCRA, TakeSlack)
//	{p}slackpause:{method}:{team}        string  router, worker     the same        Slack's Retry-After (PauseSlack)
//	asynq:{{p}replies}:…                 asynq   Enqueue, Serve     Serve, Inspect  asynq's own (tasks kept TaskRetention)
//
// The claim keys hold the event id that took them; the reply hash holds a
// konstruct.ReplyState; the inflight set scores each unfinished reply's
// post (konstruct.Post.String) by the Unix ms at which, without a
// heartbeat, the janitor may take it over.
type keys struct{ prefix string }

func (k keys) tenant(tenantID, kind string) string {
	return k.prefix + tenantID + ":" + kind + ":"
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
func (k keys) reply(p konstruct.Post) string     { return k.tenant(p.TenantID, "reply") + postSuffix(p) }
func (k keys) replyLock(p konstruct.Post) string { return k.reply(p) + ":lock" }
func (k keys) inflight() string                  { return k.prefix + "replies:inflight" }
func (k keys) intake() string                    { return k.prefix + "intake" }

func (k keys) slackBudget(method, scope string) string {
	return k.prefix + "slack:" + method + ":" + scope
}
func (k keys) slackPause(method, teamID string) string {
	return k.prefix + "slackpause:" + method + ":" + teamID
}

func (k keys) task(p konstruct.Post) string { return k.tenant(p.TenantID, "task") + postSuffix(p) }
func (k keys) fairRing() string             { return k.prefix + "fair:ring" }
func (k keys) fairWaitPrefix() string       { return k.prefix + "fair:wait:" }
func (k keys) fairWait(tenantID string) string {
	return k.fairWaitPrefix() + tenantID
}
func (k keys) fairJobs() string               { return k.prefix + "fair:jobs" }
func (k keys) fairAdmitted() string           { return k.prefix + "fair:admitted" }
func (k keys) fairRun() string                { return k.prefix + "fair:run" }
func (k keys) fairWorkers() string            { return k.prefix + "fair:workers" }
func (k keys) fairKick() string               { return k.prefix + "fair:kick" }
func (k keys) fairAvg() string                { return k.prefix + "fair:avg_ms" }
func (k keys) llmHeld(provider string) string { return k.prefix + "llm:" + provider + ":held" }
func (k keys) llmWait(provider string) string { return k.prefix + "llm:" + provider + ":wait" }

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
