// Package bot is Konstruct's edge towards Slack: it keeps the Socket Mode
// connections of every active workspace open, acks each envelope before
// anything else, normalizes events into konstruct.Message values for the
// router, and performs the Slack Web API writes (placeholder, chat.update,
// ephemerals, streams) for the router and the workers. It is the only
// package that imports slack-go.
package bot
