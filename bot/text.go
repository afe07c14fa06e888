package bot

import "context"

// PostText posts plain text in a thread and returns its ts. It is PostMessage
// for callers that must not depend on this package's types (the router
// declares the Slack writes it needs as an interface of strings).
func (w *Web) PostText(ctx context.Context, teamID, channelID, threadTS, text string) (string, error) {
	return w.PostMessage(ctx, teamID, channelID, threadTS, Msg{Text: text})
}

// UpdateText replaces the content of a bot message with plain text.
func (w *Web) UpdateText(ctx context.Context, teamID, channelID, ts, text string) error {
	return w.Update(ctx, teamID, channelID, ts, Msg{Text: text})
}
