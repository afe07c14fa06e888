package worker

import (
	"context"
	"regexp"
	"strings"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/bot"
	"github.com/konstruct/konstruct/llm"
)

// transparencyClause keeps the persona honest about what it is.
const transparencyClause = "You are an AI assistant, not a human being. Never claim or imply that you are human. " +
	"If anyone asks whether they are talking to a person, a bot or an AI, say plainly that you are an AI assistant."

// formattingGuide fits answers to the Slack markdown block, which renders
// standard Markdown.
const formattingGuide = "You are answering in a Slack thread. Write standard Markdown: **bold**, _italic_, " +
	"lists, [links](https://example.com), `inline code`, fenced code blocks with a language (```go), " +
	"and tables when they help. Do not use HTML. Keep answers focused and conversational; " +
	"earlier messages of the thread start with the name of who wrote them in brackets, like [alice]; never start your own answer with a name."

// systemPrompt builds the system message: the tenant's instructions, the
// agent's identity and persona, the transparency clause and formatting guidance.
func systemPrompt(a konstruct.Agent) string {
	var parts []string
	if s := strings.TrimSpace(a.Instructions); s != "" {
		parts = append(parts, s)
	}
	var id strings.Builder
	if a.Name != "" {
		id.WriteString("Your name is " + strings.TrimSpace(a.Name) + ".")
	}
	if a.Role != "" {
		if id.Len() > 0 {
			id.WriteByte(' ')
		}
		id.WriteString("Your role is " + strings.TrimSpace(a.Role) + ".")
	}
	if id.Len() > 0 {
		parts = append(parts, id.String())
	}
	if s := strings.TrimSpace(a.Persona); s != "" {
		parts = append(parts, s)
	}
	parts = append(parts, transparencyClause, formattingGuide)
	return strings.Join(parts, "\n\n")
}

var mentionRE = regexp.MustCompile(`<@([UW][A-Z0-9]+)(?:\|[^>]*)?>`)

// threadContext is what the history needs to know about the reply.
type threadContext struct {
	teamID    string
	agentName string
	botUserID string          // from the message, else learnt from our own placeholder in the thread
	botID     string          // idem
	skipTS    map[string]bool // our placeholder and follow-ups of this reply
}

// noiseText is bot text that is not part of the conversation: placeholders
// and error messages.
func noiseText(s string) bool {
	s = strings.TrimSpace(s)
	if s == "" {
		return true
	}
	t := strings.Trim(strings.ToLower(s), "_*: ")
	if strings.HasPrefix(t, "thinking") && len(t) < 20 {
		return true
	}
	for _, e := range errorTexts {
		if strings.HasPrefix(s, e) {
			return true
		}
	}
	return false
}

// buildMessages returns the chat: the system prompt, the thread's earlier
// messages that fit the token budget (newest kept first) and the message to
// answer.
func (w *Server) buildMessages(ctx context.Context, agent konstruct.Agent, msg konstruct.Message, thread []bot.ThreadMessage, tc threadContext) []llm.Message {
	// Learn our identity from the placeholder (always ours) when possible.
	for _, m := range thread {
		if tc.skipTS[m.TS] && (m.BotID != "" || m.User != "") {
			tc.botID, tc.botUserID = m.BotID, m.User
			break
		}
	}
	names := map[string]string{}
	name := func(user string) string {
		if user == "" {
			return ""
		}
		if user == tc.botUserID {
			return agent.Name
		}
		if n, ok := names[user]; ok {
			return n
		}
		n := w.deps.Slack.UserName(ctx, tc.teamID, user)
		names[user] = n
		return n
	}
	clean := func(text string) string {
		text = mentionRE.ReplaceAllStringFunc(text, func(m string) string {
			id := mentionRE.FindStringSubmatch(m)[1]
			if id == tc.botUserID {
				return ""
			}
			return "@" + name(id)
		})
		return strings.TrimSpace(text)
	}

	var earlier []llm.Message
	for _, m := range thread {
		if m.TS == msg.TS || tc.skipTS[m.TS] || !tsBefore(m.TS, msg.TS) {
			continue
		}
		switch m.SubType {
		case "", "bot_message", "thread_broadcast", "file_share", "me_message":
		default:
			continue // joins, edits' ghosts and such
		}
		isBot := m.BotID != "" || m.SubType == "bot_message"
		ours := isBot && (tc.botID == "" || m.BotID == tc.botID) || (tc.botUserID != "" && m.User == tc.botUserID)
		text := m.Text
		if ours {
			if noiseText(text) {
				continue
			}
			earlier = append(earlier, llm.Message{Role: "assistant", Name: agent.Name, Content: strings.TrimSpace(text)})
			continue
		}
		text = clean(text)
		if text == "" {
			continue
		}
		speaker := name(m.User)
		if isBot && speaker == "" {
			speaker = "another bot"
		}
		earlier = append(earlier, userTurn(speaker, text))
	}

	// Keep the newest messages that fit the budget.
	budget := w.cfg.HistoryTokens
	keep := len(earlier)
	for i := len(earlier) - 1; i >= 0; i-- {
		c := llm.EstimateMessageTokens(earlier[i])
		if c > budget {
			break
		}
		budget -= c
		keep = i
	}
	earlier = earlier[keep:]

	out := make([]llm.Message, 0, len(earlier)+2)
	out = append(out, llm.Message{Role: "system", Content: systemPrompt(agent)})
	out = append(out, earlier...)
	q := clean(msg.Text)
	if q == "" {
		q = "(The user mentioned you without a message.)"
	}
	// The question itself carries its author only in `name`: it is the
	// turn being answered, and echoing back a "[name]" prefix looks odd.
	out = append(out, llm.Message{Role: "user", Name: name(msg.User), Content: q})
	return out
}

// userTurn is a person's earlier message in the thread. The speaker goes in the OpenAI `name`
// field and, because several servers (Ollama, llama.cpp) drop that field,
// in front of the text too: in a thread with several people the model must
// know who said what.
func userTurn(speaker, text string) llm.Message {
	if speaker == "" {
		return llm.Message{Role: "user", Content: text}
	}
	return llm.Message{Role: "user", Name: speaker, Content: "[" + speaker + "] " + text}
}

// tsBefore compares Slack timestamps ("1712345678.000100").
func tsBefore(a, b string) bool {
	ai, af, _ := strings.Cut(a, ".")
	bi, bf, _ := strings.Cut(b, ".")
	if len(ai) != len(bi) {
		return len(ai) < len(bi)
	}
	if ai != bi {
		return ai < bi
	}
	for len(af) < len(bf) {
		af += "0"
	}
	for len(bf) < len(af) {
		bf += "0"
	}
	return af < bf
}
