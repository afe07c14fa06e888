// Package router makes the decisions between the gateway and the workers:
// which tenant a message belongs to, whether it is a bot's or a duplicate,
// whether the bot is spoken to (mention, DM, engaged thread), whether the
// tenant's channel is over its rate limit; then it posts the placeholder and
// enqueues the reply task. It imports neither slack-go nor pgx: it declares
// the small interfaces it needs next to their use.
package router
