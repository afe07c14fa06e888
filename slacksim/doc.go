// Package slacksim is an in-process Slack for tests, the demo and benchmarks.
//
// No real Slack is reachable from our machines and slack-go's slacktest does
// not speak Socket Mode, so slacksim emulates the parts Konstruct relies on,
// faithfully enough that slack-go's socketmode client and slack.Client (with
// slack.OptionAPIURL(sim.APIURL())) and Slack's own Node SDK work unmodified:
//
//   - Socket Mode: apps.connections.open (xapp token) returns a single-use
//     ws:// URL; the socket gets a hello frame, websocket PINGs every
//     ping interval, events_api envelopes delivered to one socket of the app
//     (round-robin; queued while none is connected), interactive envelopes
//     (block_actions) for clicks on the bot's buttons, ack tracking, redelivery
//     of unacked envelopes (retry_attempt 1..3, retry_reason "timeout"),
//     disconnect frames, abrupt drops and too_many_websockets beyond 10.
//   - Web API under /api/ (form or JSON body, token in the form or Bearer):
//     auth.test, chat.postMessage/update/delete/postEphemeral,
//     chat.startStream/appendStream/stopStream, conversations.replies/
//     history/info, users.info, assistant.threads.*, reactions.add/remove,
//     with Slack's error strings, per-tier rate limits (429 + Retry-After)
//     and injectable faults.
//   - Drivers that act as humans (Mention, Post, DM, Edit, Delete, PostAsBot,
//     ClickButton, ClickButtonAs) and Thread/WaitThread, which show a thread
//     as a person sees it.
//
// The bot's own posts come back as message events with bot_id (and its edits
// as message_changed), as real Slack does; WithBotEcho(false) turns that off.
//
// # Control endpoint
//
// Besides /api/ and /link/, the server answers on /_sim/ (used by the
// standalone `konstruct slacksim` and by anything that is not Go):
//
//	POST /_sim/post        {"team","channel","user","text","thread_ts","kind":"mention|message|dm"}
//	                       → {"ok":true,"ts","team","channel"}; kind defaults to mention, team to
//	                       the first workspace, channel to its #general, user to its first human.
//	GET  /_sim/thread?team=&channel=&ts=   → ThreadView JSON {"messages":[…],"ephemerals":{…},"status":…}
//	GET  /_sim/workspaces  → [WorkspaceSpec…] (ids, tokens, #general id, human user ids)
//	POST /_sim/click       {"team","channel","ts","user","user_team","action_id"} → {"ok":true}: a person
//	                       (of user_team, default team) presses a button of the message at ts
//	POST /_sim/disconnect?app=&reason=     → sends a disconnect envelope to the app's sockets
//
// RunStandalone starts such a server with one seeded workspace and prints
// api_url=, team_id=, app_token= and bot_token= lines.
package slacksim
