// Package konstruct holds the domain types of Konstruct, a self-hosted
// "AI employee" for Slack, and the error codes every layer shares. It imports
// only the standard library.
//
// The data flow, package by package, following one message:
//
//	Slack ──ws──> bot      one Socket Mode connection set per app token; each
//	                       envelope is normalized into a Message off the read
//	                       loop, recorded (spool: Redis, else local disk), and
//	                       only then acked; chatter needs no record
//	              router   reads the Records (a Redis consumer group, queue):
//	                       tenant → its Policy → drop bots/dupes → engaged
//	                       thread? → rate limit → budget → ReplyState +
//	                       placeholder → enqueue a ReplyJob; a click on an
//	                       answer's buttons (an Action) is a Vote or a Stop
//	              worker   a reply: agent persona → thread history → llm
//	                       (streamed, with Stop; tokens counted against the
//	                       budget) → chat.update in the thread (bot), 👍/👎
//	                       on the answer → the replies row (store); the
//	                       janitor finishes orphans
//
// One identity follows a message through all of it: its Post (tenant, team,
// channel, ts). The dedupe claim, the ReplyState, the task id and the
// replies row all derive from it, so every step can be repeated — after a
// crash, a retry, or on another process — without a second answer.
//
// With tracing on (tracing.otlp_endpoint), a message also carries its trace
// (Message.TraceParent): the gateway starts it for what it records, the
// router and the worker continue it, ids and timings only (internal/tracing).
//
// store wraps Postgres (pgx, Row-Level Security per tenant), queue wraps
// Redis and asynq, llm wraps any OpenAI-compatible endpoint, config is the
// only package that reads viper, migrations embeds the SQL schema, slacksim
// emulates Slack for tests, the demo and benchmarks, and cmd/konstruct wires
// everything in one run().
package konstruct
