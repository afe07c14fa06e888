package worker

import (
	"context"
	"log/slog"
	"strings"

	"github.com/konstruct/konstruct"
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

// prompt builds the chat for a reply: the system prompt, the thread's
// earlier messages (read from Slack when the post is in a thread) and the
// question. alone (the tenant follows no threads) leaves the thread out:
// the model sees the question only.
func (w *Server) prompt(ctx context.Context, agent konstruct.Agent, m konstruct.Message, st *konstruct.ReplyState, alone bool) ([]llm.Message, error) {
	// A top-level post starts its thread: there is no history to read, and
	// skipping conversations.replies saves a Slack round trip (Tier 3) on
	// the most common path — once we know our own bot user, which the
	// thread would otherwise tell us.
	var thread []konstruct.ThreadMessage
	if !alone && (m.InThread() || m.BotUserID == "") {
		var err error
		thread, err = w.deps.Slack.Replies(ctx, m.TeamID, m.ChannelID, m.ReplyThreadTS())
		if err != nil {
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			// An answer without context beats no answer.
			w.log.LogAttrs(ctx, slog.LevelWarn, "read thread history", slog.String("error", err.Error()), slog.String("team_id", m.TeamID))
		}
	}
	skip := map[string]bool{st.PlaceholderTS: true, st.StreamTS: true}
	for _, ts := range st.FollowUps {
		skip[ts] = true
	}
	return w.buildMessages(ctx, agent, m, thread, threadContext{botUserID: m.BotUserID, skipTS: skip}), nil
}

// threadContext is what the history needs to know about the reply.
type threadContext struct {
	botUserID string          // from the message, else learnt from our own placeholder in the thread
	botID     string          // idem
	skipTS    map[string]bool // our placeholder and follow-ups of this reply
}

// noiseText is bot text that is not part of the conversation: placeholders
// and error messages.
func noiseText(s string) bool {
	s = strings.TrimSpace(s)
	if s == "" || konstruct.IsPlaceholder(s) {
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
// answer. Thread messages come readable from the Slack edge (mentions as
// names, authors named).
func (w *Server) buildMessages(ctx context.Context, agent konstruct.Agent, msg konstruct.Message, thread []konstruct.ThreadMessage, tc threadContext) []llm.Message {
	// Learn our identity from the placeholder (always ours) when possible.
	for _, m := range thread {
		if tc.skipTS[m.TS] && (m.BotID != "" || m.User != "") {
			tc.botID, tc.botUserID = m.BotID, m.User
			break
		}
	}

	var earlier []llm.Message
	for _, m := range thread {
		if m.TS == msg.TS || tc.skipTS[m.TS] || !konstruct.TSBefore(m.TS, msg.TS) {
			continue
		}
		switch m.SubType {
		case "", "bot_message", "thread_broadcast", "file_share", "me_message":
		default:
			continue // joins, edits' ghosts and such
		}
		isBot := m.BotID != "" || m.SubType == "bot_message"
		ours := isBot && (tc.botID == "" || m.BotID == tc.botID) || (tc.botUserID != "" && m.User == tc.botUserID)
		text := strings.TrimSpace(m.Text)
		if ours {
			if noiseText(text) {
				continue
			}
			earlier = append(earlier, llm.Message{Role: "assistant", Name: agent.Name, Content: text})
			continue
		}
		if text == "" {
			continue
		}
		speaker := m.Author
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
	q := strings.TrimSpace(w.deps.Slack.Readable(ctx, msg.TeamID, msg.Text))
	if q == "" {
		q = "(The user mentioned you without a message.)"
	}
	q = boundQuestion(q)
	// The question itself carries its author only in `name`: it is the
	// turn being answered, and echoing back a "[name]" prefix looks odd.
	out = append(out, llm.Message{Role: "user", Name: w.deps.Slack.UserName(ctx, msg.TeamID, msg.User), Content: q})
	return out
}

// userTurn is a person's earlier message in the thread. The speaker goes in
// the OpenAI `name` field and, because several servers (Ollama, llama.cpp)
// drop that field, in front of the text too: in a thread with several
// people the model must know who said what.
func userTurn(speaker, text string) llm.Message {
	if speaker == "" {
		return llm.Message{Role: "user", Content: text}
	}
	return llm.Message{Role: "user", Name: speaker, Content: "[" + speaker + "] " + text}
}

// MaxQuestionTokens bounds the message being answered, as HistoryTokens
// bounds the thread before it: one huge post (a paste, or text aimed at the
// model's context or the tenant's token budget) is cut, with a note the
// model sees, instead of going to the model whole.
const MaxQuestionTokens = 4000

// truncatedNote ends a question that was cut.
const truncatedNote = " … (message truncated)"

// boundQuestion cuts q to MaxQuestionTokens (llm.EstimateTokens), note
// included, at a space near the limit when there is one.
func boundQuestion(q string) string {
	if llm.EstimateTokens(q) <= MaxQuestionTokens {
		return q
	}
	limit := MaxQuestionTokens - llm.EstimateTokens(truncatedNote)
	ascii, other, cut := 0, 0, len(q)
	for i, r := range q {
		if r < 0x80 {
			ascii++
		} else {
			other++
		}
		if (ascii+3)/4+other > limit {
			cut = i
			break
		}
	}
	head := q[:cut]
	// Prefer a word boundary, if one is near.
	if sp := strings.LastIndexAny(head, " \n\t"); sp > 0 && cut-sp < 200 {
		head = head[:sp]
	}
	return strings.TrimSpace(head) + truncatedNote
}
