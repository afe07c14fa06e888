// Package router makes the decisions between the gateway and the workers.
// It reads the records the gateway wrote before acking (Intake, a consumer
// group in Redis) and decides for each: which tenant the message belongs
// to, whether the tenant's policy lets its AI employee answer there and
// that person (policy.go: outside it nothing happens, but a DM's one note
// a day), whether the bot is spoken to (mention, DM, a thread it follows
// under the policy), whether it is a duplicate (a claim owned by the
// record, so routing the same record again is not its own duplicate),
// whether the tenant's channel is over its rate limit or the tenant over
// its token budget (one line a day per person instead of an answer); then
// it records the reply's state, posts the placeholder and enqueues the
// reply task. Clicks on the bot's buttons come the same way and become a
// vote or a Stop, only from the answer's own workspace. A record is
// finished only once its outcome is durable; transient errors route it
// again, and records a dead process left are taken over after a lease
// (run.go).
//
// Prefilter is the part of the decision the payload alone can make; the
// gateway applies it before recording, so channel chatter costs no I/O.
// The router imports neither slack-go nor pgx nor Redis: it declares the
// small interfaces it needs next to their use.
package router
