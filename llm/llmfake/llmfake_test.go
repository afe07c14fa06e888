package llmfake_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/konstruct/konstruct/llm/llmfake"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func post(t *testing.T, ctx context.Context, s *llmfake.Server, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL()+"chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestSplitJoinsBack(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "one", "Hello, world!\n\n```go\nx := 1\n```\n", "  lead and trail  ", "日本語 テキスト"} {
		if got := strings.Join(llmfake.Split(s), ""); got != s {
			t.Errorf("Split(%q) joins to %q", s, got)
		}
	}
	if got := llmfake.Split("a bc  d"); len(got) != 3 || got[1] != "bc  " {
		t.Errorf("Split = %q", got)
	}
}

func TestStreamWireFormat(t *testing.T) {
	t.Parallel()
	s := llmfake.New()
	defer s.Close()
	res := post(t, t.Context(), s, `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi there"}]}`)
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type = %q", ct)
	}
	var text strings.Builder
	var sawUsage, sawDone bool
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			sawDone = true
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("chunk %q: %v", line, err)
		}
		for _, ch := range c.Choices {
			text.WriteString(ch.Delta.Content)
		}
		if c.Usage != nil && c.Usage.CompletionTokens > 0 {
			sawUsage = true
		}
	}
	if text.String() != "Echo: hi there" || !sawUsage || !sawDone {
		t.Errorf("text %q, usage %v, done %v", text.String(), sawUsage, sawDone)
	}
	if r := s.Requests(); len(r) != 1 || r[0].LastUser() != "hi there" || !r[0].IncludeUsage {
		t.Errorf("recorded %+v", r)
	}
}

func TestNonStreamAndErrors(t *testing.T) {
	t.Parallel()
	s := llmfake.New(llmfake.WithHandler(func(r llmfake.ChatRequest) llmfake.Reply {
		if r.LastUser() == "fail" {
			return llmfake.Reply{Status: 429, RetryAfter: 3}
		}
		return llmfake.Reply{Text: "plain"}
	}))
	defer s.Close()
	res := post(t, t.Context(), s, `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}`)
	var out struct {
		Choices []struct{ Message struct{ Content string } } `json:"choices"`
	}
	err := json.NewDecoder(res.Body).Decode(&out)
	res.Body.Close()
	if err != nil || len(out.Choices) != 1 || out.Choices[0].Message.Content != "plain" {
		t.Errorf("non-stream = %+v, %v", out, err)
	}
	res = post(t, t.Context(), s, `{"model":"m","stream":true,"messages":[{"role":"user","content":"fail"}]}`)
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 429 || res.Header.Get("Retry-After") != "3" {
		t.Errorf("status %d, Retry-After %q", res.StatusCode, res.Header.Get("Retry-After"))
	}
}

func TestCloseEndsHungStreams(t *testing.T) {
	t.Parallel()
	s := llmfake.New(llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply {
		return llmfake.Reply{Text: "a b c", HangAfter: 1}
	}))
	res := post(t, t.Context(), s, `{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}`)
	defer res.Body.Close()
	done := make(chan struct{})
	go func() {
		s.Close()
		s.Close() // idempotent
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung on a hung stream")
	}
	_, _ = io.Copy(io.Discard, res.Body) // ends: the connection was closed
}

func TestEchoSaysItIsCanned(t *testing.T) {
	t.Parallel()
	var r llmfake.ChatRequest
	r.Messages = append(r.Messages, struct{ Role, Name, Content string }{"user", "ada", "What is our refund policy?\nThanks"})
	text := llmfake.Echo(r).Text
	for _, want := range []string{"canned echo", "offline", "> What is our refund policy?", "> Thanks"} {
		if !strings.Contains(text, want) {
			t.Errorf("Echo text %q lacks %q", text, want)
		}
	}
}

func TestModelsAndAPIKey(t *testing.T) {
	t.Parallel()
	s := llmfake.New(llmfake.WithModels("a", "b"), llmfake.WithAPIKey("k"))
	defer s.Close()
	get := func(key string) *http.Response {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL()+"models", nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := get("wrong")
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong key: status %d", res.StatusCode)
	}
	res = get("k")
	defer res.Body.Close()
	var out struct{ Data []struct{ ID string } }
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || len(out.Data) != 2 || out.Data[1].ID != "b" {
		t.Errorf("models = %+v, %v", out, err)
	}
}
