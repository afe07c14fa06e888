// Package bot is Konstruct's edge towards Slack: it keeps the Socket Mode
// connections of every active workspace open, acks each envelope before
// anything else, normalizes events into konstruct.Message values for the
// router, and performs the Slack Web API writes (placeholder, chat.update,
// ephemerals, streams) for the router and the workers. It is the only
// package that imports slack-go.
//
// Socket Mode is spoken directly over github.com/gorilla/websocket (the
// library slack-go uses), not with slack-go's socketmode client: that client
// fully parses every event (slackevents, blocks included) before the app can
// ack it, reconnects on every disconnect frame without make-before-break,
// and buffers only 50 events. Here the read loop scans a frame's top-level
// fields with a byte scan (envelope.go), reserves room in the bounded
// hand-off, writes the ack, and passes the raw payload to a small pool of
// normalizers that feeds Events; a refresh opens the replacement socket
// before closing the old one. slack-go remains the Web API client,
// apps.connections.open included.
package bot
