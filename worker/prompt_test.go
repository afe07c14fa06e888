package worker

import (
	"context"
	"strings"
	"testing"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/llm"
)

// The message being answered is bounded before the LLM, as the thread
// history is: a huge post goes to the model cut, with a note it can see.
func TestQuestionBoundedBeforeTheModel(t *testing.T) {
	t.Parallel()
	w := &Server{cfg: Config{HistoryTokens: 6000}.withDefaults(), deps: Deps{Slack: promptSlack{}}}
	agent := konstruct.Agent{Name: "Mara"}
	tc := threadContext{botUserID: "UBOT", skipTS: map[string]bool{}}
	tests := []struct {
		name     string
		question string
		cut      bool
	}{
		{"short", "<@UBOT> how do I rotate the API key?", false},
		{"at the limit", strings.Repeat("abcd", MaxQuestionTokens), false},
		{"long prose", strings.Repeat("please summarise this paragraph again ", 20000), true},
		{"one long word", strings.Repeat("x", 100000), true},
		{"non-ASCII", strings.Repeat("検索", 10000), true},
	}
	for _, tt := range tests {
		msg := konstruct.Message{TeamID: "T1", ChannelID: "C1", User: "U001", TS: "1712345679.000001", Text: tt.question}
		out := w.buildMessages(context.Background(), agent, msg, nil, tc)
		q := out[len(out)-1].Content
		if n := llm.EstimateTokens(q); n > MaxQuestionTokens {
			t.Errorf("%s: the question goes to the model as %d tokens, bound %d", tt.name, n, MaxQuestionTokens)
		}
		if cut := strings.HasSuffix(q, "(message truncated)"); cut != tt.cut {
			t.Errorf("%s: truncated = %v, want %v (%d tokens)", tt.name, cut, tt.cut, llm.EstimateTokens(tt.question))
		}
		if !tt.cut && q != strings.TrimSpace(strings.ReplaceAll(tt.question, "<@UBOT>", "")) {
			t.Errorf("%s: a question within the bound was changed: %q", tt.name, q)
		}
		if tt.cut && !strings.HasPrefix(tt.question, strings.TrimSuffix(q, truncatedNote)) {
			t.Errorf("%s: the kept part is not the start of the question", tt.name)
		}
	}
}
