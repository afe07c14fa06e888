package bot

import (
	"context"
	"strings"
)

// Mentions in Slack's markup are <@U123> or <@U123|label> (W… for
// Enterprise Grid users). rewriteMentions replaces each one with what f
// returns for its user id, and tidies the spaces left behind; it is the one
// parser of mentions in the product.
func rewriteMentions(text string, f func(userID string) string) string {
	if !strings.Contains(text, "<@") {
		return text
	}
	var b strings.Builder
	b.Grow(len(text))
	rest := text
	changed := false
	for {
		i := strings.Index(rest, "<@")
		if i < 0 {
			b.WriteString(rest)
			break
		}
		after := rest[i+2:]
		end := strings.IndexByte(after, '>')
		id := ""
		if end > 0 {
			id, _, _ = strings.Cut(after[:end], "|")
		}
		if !validUserID(id) {
			b.WriteString(rest[:i+2])
			rest = after
			continue
		}
		b.WriteString(rest[:i])
		b.WriteString(f(id))
		rest = after[end+1:]
		changed = true
	}
	if !changed {
		return text
	}
	return tidySpaces(b.String())
}

// validUserID accepts Slack user ids: U or W, then upper-case letters and digits.
func validUserID(id string) bool {
	if len(id) < 2 || (id[0] != 'U' && id[0] != 'W') {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// Readable turns a message's markup into what a reader sees: the bot's
// own mentions removed, other people's as "@Display Name", Slack's &amp;
// &lt; &gt; as the characters they stand for.
func (w *Web) Readable(ctx context.Context, teamID, text string) string {
	c, err := w.client(ctx, teamID)
	if err != nil {
		return w.readable(ctx, teamID, "", text)
	}
	return w.readable(ctx, teamID, c.botUserID, text)
}

// readable decodes the entities after the mentions are rewritten, so that
// a person's literal "&lt;@U1&gt;" never turns into a mention.
func (w *Web) readable(ctx context.Context, teamID, botUserID, text string) string {
	return decodeEntities(rewriteMentions(text, func(id string) string {
		if id == botUserID {
			return ""
		}
		return "@" + w.UserName(ctx, teamID, id)
	}))
}
