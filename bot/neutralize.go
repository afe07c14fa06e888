package bot

import (
	"context"
	"strings"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/markdown"
)

// What the bot writes comes from a model that anyone who can write in the
// thread can steer, so nothing it writes may act on Slack's markup: special
// mentions (<!here>, <!channel>, <!everyone>, <!subteam^…>, any <!…>),
// mentions of people the asker did not mention (<@U…>), and labelled links
// whose label hides their target (<https://…|label>, [label](https://…))
// are shown as inert text. Mentions of the asker and of the people the
// asker's question mentioned stay live: answering "ask @bob" with a
// mention of bob is what the asker wanted (konstruct.WithAsker).
//
// Two renderings, one per kind of field:
//   - `text` (and ephemerals) is Slack's mrkdwn: &, < and > are escaped as
//     &amp; &lt; &gt;, as Slack documents; it shows them literally.
//   - Markdown (the markdown block, chat.*Stream's markdown_text) keeps &
//     and > (entities would show raw in code, and > starts a quote); a <
//     that could open a Slack token gets a zero-width space after it, which
//     no token matches, and which the reader does not see. Markdown links
//     show their URL (markdown.VisibleLinks).

// zwsp (U+200B ZERO WIDTH SPACE) breaks a "<" away from what follows it.
const zwsp = "\u200b"

// allowance is who a message may mention (notify); nil allows nobody.
type allowance map[string]bool

func (a allowance) allows(userID string) bool { return a[userID] }

// allowanceFor is who the bot may mention in what it writes under ctx: the
// asker and the users the asker's question mentions, never the bot itself.
func allowanceFor(ctx context.Context, botUserID string) allowance {
	user, question := konstruct.AskerFrom(ctx)
	if user == "" {
		return nil
	}
	a := allowance{}
	if validUserID(user) {
		a[user] = true
	}
	rewriteMentions(question, func(id string) string {
		a[id] = true
		return ""
	})
	delete(a, botUserID)
	return a
}

// mentionAt reports whether s starts with a user mention, <@U123> or
// <@U123|label>, and returns its user id and length.
func mentionAt(s string) (id string, n int, ok bool) {
	end := strings.IndexByte(s, '>')
	if end < 0 {
		return "", 0, false
	}
	id, ok = mentionIn(s[:end+1])
	return id, end + 1, ok
}

// mentionIn reports whether token, a "<…>" with no other ">", is a user
// mention, and returns its user id.
func mentionIn(token string) (string, bool) {
	if !strings.HasPrefix(token, "<@") {
		return "", false
	}
	id, _, _ := strings.Cut(token[2:len(token)-1], "|")
	return id, validUserID(id)
}

// neutralizeText renders text for a `text` field: every &, < and > escaped,
// but for mentions of allowed users (kept, as <@U…>).
func neutralizeText(s string, allowed allowance) string {
	if !strings.ContainsAny(s, "&<>") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + len(s)/8)
	gt := -1 // as in neutralizeMarkdown
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '&':
			b.WriteString("&amp;")
		case '>':
			b.WriteString("&gt;")
		case '<':
			if gt < i {
				gt = len(s)
				if j := strings.IndexByte(s[i:], '>'); j >= 0 {
					gt = i + j
				}
			}
			if gt < len(s) {
				if id, ok := mentionIn(s[i : gt+1]); ok && allowed.allows(id) {
					b.WriteString("<@" + id + ">")
					i = gt
					continue
				}
			}
			b.WriteString("&lt;")
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// neutralizeMarkdown renders Markdown for the markdown block or a stream.
// partial says s is a piece of a stream whose continuation Slack will
// append: a "<" whose token is not closed yet is broken too, and so is
// every "]" (a link split between two pieces would otherwise form once
// Slack joins them); the final edit of the message carries the whole text.
func neutralizeMarkdown(s string, allowed allowance, partial bool) string {
	if partial {
		s = strings.ReplaceAll(s, "]", "]"+zwsp)
	} else {
		s = markdown.VisibleLinks(s)
	}
	if !strings.Contains(s, "<") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	gt := -1 // the first ">" at or after i (len(s) when none): linear in len(s)
	for i := 0; i < len(s); i++ {
		if s[i] != '<' {
			b.WriteByte(s[i])
			continue
		}
		if gt < i {
			gt = len(s)
			if j := strings.IndexByte(s[i:], '>'); j >= 0 {
				gt = i + j
			}
		}
		if gt < len(s) {
			if id, ok := mentionIn(s[i : gt+1]); ok && allowed.allows(id) {
				b.WriteString("<@" + id + ">")
				i = gt
				continue
			}
		}
		end := -1
		if gt < len(s) {
			end = gt - (i + 1)
		}
		b.WriteByte('<')
		if opensToken(s[i+1:], end, partial) {
			b.WriteString(zwsp)
		}
	}
	return b.String()
}

// opensToken reports whether a "<" followed by rest could open a Slack
// token that acts: a special mention (<!…>), a user mention (<@…>), or a
// link with a label (<https://…|label>, <#C…|label>). A "<" followed by a
// space, or one that never closes (in a whole message), opens nothing; a
// "<" with no label (<https://…>, Vec<T>) shows what it is.
// end is the index in rest of the first ">", -1 when there is none.
func opensToken(rest string, end int, partial bool) bool {
	if rest == "" {
		return partial
	}
	switch rest[0] {
	case '!', '@':
		return true
	case ' ', '\t', '\n', '\r':
		return false
	}
	if end < 0 {
		return partial
	}
	target, _, labelled := strings.Cut(rest[:end], "|")
	// A target without any of these is no URL, channel or mention
	// (`Array<string | number>`, a shell pipe): Slack links nothing.
	return labelled && strings.ContainsAny(target, ":/.#@!")
}

// decodeEntities undoes Slack's escaping of &, < and > in message text
// read back from Slack (&amp; last, so that "&amp;lt;" reads "&lt;").
func decodeEntities(s string) string {
	if !strings.Contains(s, "&") {
		return s
	}
	s = strings.ReplaceAll(s, "&lt;", "<")
	s = strings.ReplaceAll(s, "&gt;", ">")
	return strings.ReplaceAll(s, "&amp;", "&")
}
