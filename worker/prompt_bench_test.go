package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/konstruct/konstruct"
)

// promptSlack answers user names and readable text as the Slack edge
// would; buildMessages calls nothing else.
type promptSlack struct{ Slack }

func (promptSlack) UserName(_ context.Context, _, userID string) string { return "name-of-" + userID }
func (promptSlack) Readable(_ context.Context, _, text string) string {
	return strings.ReplaceAll(strings.ReplaceAll(text, "<@UBOT>", ""), "<@U002>", "@name-of-U002")
}

// BenchmarkBuildMessages builds the chat for a mention in a thread of n
// earlier messages (humans mentioning each other, and the bot's answers).
func BenchmarkBuildMessages(b *testing.B) {
	agent := konstruct.Agent{Name: "Mara", Role: "Customer Support",
		Persona:      "Warm, concise and practical. Uses short paragraphs and bullet lists when they help.",
		Instructions: "You work for Demo Co. Help colleagues with questions about the product."}
	w := &Server{cfg: Config{HistoryTokens: 6000}.withDefaults(), deps: Deps{Slack: promptSlack{}}}
	for _, n := range []int{0, 10, 100} {
		b.Run(fmt.Sprintf("thread-%d", n), func(b *testing.B) {
			var thread []konstruct.ThreadMessage
			for i := range n {
				m := konstruct.ThreadMessage{TS: fmt.Sprintf("1712345678.%06d", i+1)}
				if i%2 == 1 {
					m.User, m.BotID, m.Text = "UBOT", "BBOT", "Here is what I found: rotate the key in **Settings → API**, then redeploy."
				} else {
					m.User, m.Author, m.Text = fmt.Sprintf("U%03d", i%7), fmt.Sprintf("name-of-U%03d", i%7), "and @name-of-U002, how do we rotate the staging API keys without downtime?"
				}
				thread = append(thread, m)
			}
			msg := konstruct.Message{TeamID: "T1", ChannelID: "C1", User: "U001", TS: "1712345679.000001", ThreadTS: "1712345678.000001",
				Text: "<@UBOT> and what about production?", IsMention: true}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				tc := threadContext{botUserID: "UBOT", botID: "BBOT", skipTS: map[string]bool{}}
				if out := w.buildMessages(ctx, agent, msg, thread, tc); len(out) < 2 {
					b.Fatalf("%d messages", len(out))
				}
			}
		})
	}
}

func BenchmarkSystemPrompt(b *testing.B) {
	agent := konstruct.Agent{Name: "Mara", Role: "Customer Support", Persona: "Warm and concise.", Instructions: "You work for Demo Co."}
	b.ReportAllocs()
	for b.Loop() {
		if systemPrompt(agent) == "" {
			b.Fatal("empty prompt")
		}
	}
}
