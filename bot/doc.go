// Package bot is Konstruct's edge towards Slack and the only package that
// imports slack-go: it keeps the Socket Mode connections of every active
// workspace open, takes in their envelopes (write, then ack), parses
// Slack's markup (mentions) once, and performs the Slack Web API writes for
// the router and the workers with what the model wrote made inert.
//
// Socket Mode is spoken directly over github.com/gorilla/websocket (the
// library slack-go uses), not with slack-go's socketmode client: that client
// fully parses every event before the app can ack it, reconnects on every
// disconnect frame without make-before-break, and buffers only 50 events.
// Here each connection slot is a small state machine (conn.go) over one or
// two websockets (session.go): the read loop scans every frame, hello
// included, with one byte scan (envelope.go) and hands events_api envelopes
// to the intake (intake.go) without waiting; there, classifiers normalize
// them (normalize.go), ack at once what needs no record, and the committer
// records the rest in group commits through a Recorder (spool: Redis, else
// disk) and acks each once recorded. A refresh opens the replacement socket
// (dial.go) before closing the old one; app.go holds what the sockets of
// one app-level token share. web.go is the Web API client.
package bot
