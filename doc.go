// Package konstruct holds the domain types of Konstruct, a self-hosted
// "AI employee" for Slack, and the error codes every layer shares. It imports
// only the standard library.
//
// The data flow, package by package:
//
//	Slack ──ws──> bot      one Socket Mode connection set per app token; every
//	                       envelope is acked first, then normalized into a Message
//	              router   tenant → drop bots/dupes → engaged thread? → rate
//	                       limit → placeholder → enqueue an asynq task
//	              worker   agent persona → thread history → llm (streamed) →
//	                       chat.update in the thread → replies row
//
// store wraps Postgres (pgx, Row-Level Security per tenant), llm wraps any
// OpenAI-compatible endpoint, config is the only package that reads viper,
// migrations embeds the SQL schema, slacksim emulates Slack for tests, the
// demo and benchmarks, and cmd/konstruct wires everything in one run().
package konstruct
