package llm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/llm"
	"github.com/konstruct/konstruct/llm/llmfake"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fake starts an llmfake server closed at the end of the test.
func fake(t *testing.T, opts ...llmfake.Option) *llmfake.Server {
	t.Helper()
	s := llmfake.New(opts...)
	t.Cleanup(s.Close)
	return s
}

// client builds a Client with test-sized timeouts unless cfg sets them.
func client(t *testing.T, cfg llm.Config) *llm.Client {
	t.Helper()
	if cfg.DefaultModel == "" {
		cfg.DefaultModel = "fake-model"
	}
	if cfg.MaxRetryWait == 0 {
		cfg.MaxRetryWait = 20 * time.Millisecond
	}
	if cfg.Timeouts.Total == 0 {
		cfg.Timeouts.Total = 10 * time.Second
	}
	c, err := llm.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// closedURL is the base URL of a port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "http://" + addr + "/v1/"
}

func ask(text string) llm.Request {
	return llm.Request{Messages: []llm.Message{
		{Role: "system", Content: "You are Mara."},
		{Role: "user", Name: "ada", Content: text},
	}}
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := konstruct.ErrorCode(err); got != code {
		t.Fatalf("error code = %q, want %q (err: %v)", got, code, err)
	}
}

func TestStreamDeltasInOrder(t *testing.T) {
	t.Parallel()
	chunks := []string{"Hel", "lo, ", "wor", "ld", "!\n\n", "```go\nx := 1\n```"}
	s := fake(t, llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply {
		return llmfake.Reply{Chunks: chunks, TokenDelay: 5 * time.Millisecond}
	}))
	c := client(t, llm.Config{Providers: []llm.Provider{{Name: "local", BaseURL: s.URL()}}})

	var got []string
	res, err := c.Stream(t.Context(), ask("hi"), func(d string) error {
		got = append(got, d)
		return nil
	})
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if !slices.Equal(got, chunks) {
		t.Errorf("deltas = %q, want %q", got, chunks)
	}
	if want := strings.Join(chunks, ""); res.Text != want {
		t.Errorf("Text = %q, want %q", res.Text, want)
	}
	if res.Provider != "local" || res.Model != "fake-model" {
		t.Errorf("Provider, Model = %q, %q", res.Provider, res.Model)
	}
	if res.UsageEstimated || res.CompletionTokens != len(chunks) || res.PromptTokens <= 0 {
		t.Errorf("usage = %d/%d estimated=%v, want the server's", res.PromptTokens, res.CompletionTokens, res.UsageEstimated)
	}
	if res.TimeToFirstToken <= 0 || res.Latency < res.TimeToFirstToken || len(res.Attempts) != 1 {
		t.Errorf("TTFT %v, latency %v, attempts %d", res.TimeToFirstToken, res.Latency, len(res.Attempts))
	}
	reqs := s.Requests()
	if len(reqs) != 1 || !reqs[0].Stream || !reqs[0].IncludeUsage {
		t.Fatalf("requests = %+v, want one streamed request asking for usage", reqs)
	}
	if m := reqs[0].Messages; len(m) != 2 || m[0].Role != "system" || m[1].Name != "ada" || m[1].Content != "hi" {
		t.Errorf("messages sent = %+v", m)
	}
}

func TestUsageEstimatedWhenAbsent(t *testing.T) {
	t.Parallel()
	s := fake(t, llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply {
		return llmfake.Reply{Text: "twelve chars and more", NoUsage: true}
	}))
	c := client(t, llm.Config{Providers: []llm.Provider{{BaseURL: s.URL()}}})
	req := ask("hello there")
	res, err := c.Stream(t.Context(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.UsageEstimated {
		t.Error("UsageEstimated = false, want true")
	}
	if want := llm.EstimateTokens(res.Text); res.CompletionTokens != want {
		t.Errorf("CompletionTokens = %d, want %d", res.CompletionTokens, want)
	}
	if want := llm.EstimateMessagesTokens(req.Messages); res.PromptTokens != want {
		t.Errorf("PromptTokens = %d, want %d", res.PromptTokens, want)
	}
}

func TestFallback(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		first     llmfake.Reply
		closed    bool // first provider's port is closed
		cfg       llm.Config
		wantFirst int // requests the first provider should see
	}{
		{name: "500s", first: llmfake.Reply{Status: 500}, wantFirst: 2},
		{name: "503 no retries", first: llmfake.Reply{Status: 503}, cfg: llm.Config{MaxRetries: -1}, wantFirst: 1},
		{name: "429 after retries", first: llmfake.Reply{Status: 429}, cfg: llm.Config{MaxRetries: 2}, wantFirst: 3},
		{name: "429 retry-after honoured", first: llmfake.Reply{Status: 429, RetryAfter: 1},
			cfg: llm.Config{MaxRetries: 1, MaxRetryWait: 3 * time.Second}, wantFirst: 2},
		{name: "429 retry-after too long", first: llmfake.Reply{Status: 429, RetryAfter: 30}, cfg: llm.Config{MaxRetries: 2}, wantFirst: 1},
		{name: "connection refused", closed: true},
		{name: "first-token timeout", first: llmfake.Reply{Text: "late", FirstTokenDelay: 5 * time.Second},
			cfg: llm.Config{Timeouts: llm.Timeouts{FirstToken: 200 * time.Millisecond}}, wantFirst: 1},
		{name: "empty answer", first: llmfake.Reply{Chunks: []string{}}, wantFirst: 1},
		{name: "408", first: llmfake.Reply{Status: 408}, wantFirst: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			first := fake(t, llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply { return tt.first }))
			second := fake(t, llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply {
				return llmfake.Reply{Text: "from the second"}
			}))
			firstURL := first.URL()
			if tt.closed {
				firstURL = closedURL(t)
			}
			cfg := tt.cfg
			cfg.Providers = []llm.Provider{{Name: "one", BaseURL: firstURL}, {Name: "two", BaseURL: second.URL()}}
			var mu sync.Mutex
			var seen []llm.Attempt
			cfg.OnAttempt = func(a llm.Attempt) { mu.Lock(); seen = append(seen, a); mu.Unlock() }
			c := client(t, cfg)

			start := time.Now()
			res, err := c.Stream(t.Context(), ask("hi"), nil)
			if err != nil {
				t.Fatalf("Stream: %v", err)
			}
			if tt.first.RetryAfter == 1 && time.Since(start) < 900*time.Millisecond {
				t.Errorf("retried after %v, before the server's Retry-After of 1s", time.Since(start))
			}
			if res.Text != "from the second" || res.Provider != "two" {
				t.Errorf("got %q from %q, want the second provider's answer", res.Text, res.Provider)
			}
			if n := len(first.Requests()); !tt.closed && n != tt.wantFirst {
				t.Errorf("first provider saw %d requests, want %d", n, tt.wantFirst)
			}
			last := res.Attempts[len(res.Attempts)-1]
			if last.Provider != "two" || last.Err != nil {
				t.Errorf("last attempt = %+v", last)
			}
			for _, a := range res.Attempts[:len(res.Attempts)-1] {
				if a.Provider != "one" || a.Err == nil {
					t.Errorf("failed attempt = %+v, want provider one with an error", a)
				}
				if tt.first.Status != 0 && a.Status != tt.first.Status {
					t.Errorf("attempt status = %d, want %d", a.Status, tt.first.Status)
				}
			}
			if tt.name == "first-token timeout" && !errors.Is(res.Attempts[0].Err, llm.ErrFirstTokenTimeout) {
				t.Errorf("first attempt err = %v, want ErrFirstTokenTimeout", res.Attempts[0].Err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != len(res.Attempts) {
				t.Errorf("OnAttempt called %d times, want %d", len(seen), len(res.Attempts))
			}
		})
	}
}

// A refusal is not an outage: the same prompt sent to the next provider
// would only reach an endpoint the tenant did not choose. The second
// provider gets no request, and the error names the provider and status.
func TestNoFallbackOnRefusal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		key    string // the first server's key; the client sends "wrong-key"
		code   string
	}{
		{status: 400, code: konstruct.EINVALID},
		{status: 401, key: "sk-right", code: konstruct.EUNAUTHORIZED},
		{status: 403, code: konstruct.EUNAUTHORIZED},
		{status: 404, code: konstruct.EINVALID},
		{status: 422, code: konstruct.EINVALID},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			t.Parallel()
			opts := []llmfake.Option{llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply { return llmfake.Reply{Status: tt.status} })}
			if tt.key != "" {
				opts = append(opts, llmfake.WithAPIKey(tt.key))
			}
			first := fake(t, opts...)
			second := fake(t, llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply { return llmfake.Reply{Text: "from the second"} }))
			c := client(t, llm.Config{Providers: []llm.Provider{
				{Name: "local", BaseURL: first.URL(), APIKey: "wrong-key"},
				{Name: "cloud", BaseURL: second.URL()},
			}})
			res, err := c.Stream(t.Context(), ask("hi"), nil)
			wantCode(t, err, tt.code)
			if n := len(second.Requests()); n != 0 {
				t.Errorf("the second provider got %d requests after a %d", n, tt.status)
			}
			if n := len(first.Requests()); tt.key == "" && n != 1 { // llmfake records no request it refused for its key
				t.Errorf("a %d was retried: %d requests", tt.status, n)
			}
			msg := konstruct.ErrorMessage(err)
			if !strings.Contains(msg, `"local"`) || !strings.Contains(msg, fmt.Sprint(tt.status)) {
				t.Errorf("message %q does not name the provider and the status", msg)
			}
			if len(res.Attempts) != 1 || res.Attempts[0].Status != tt.status {
				t.Errorf("attempts = %+v", res.Attempts)
			}
		})
	}
}

// A tenant restricted to some providers reaches only those, in its order,
// even when they are all down.
func TestRequestProviders(t *testing.T) {
	t.Parallel()
	cloud := fake(t, llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply { return llmfake.Reply{Text: "from the cloud"} }))
	down := fake(t, llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply { return llmfake.Reply{Status: 500} }))
	other := fake(t, llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply { return llmfake.Reply{Text: "from the other"} }))

	t.Run("restricted to a provider that is down", func(t *testing.T) {
		t.Parallel()
		for _, localURL := range []string{closedURL(t), down.URL()} {
			c := client(t, llm.Config{Providers: []llm.Provider{{Name: "local", BaseURL: localURL}, {Name: "cloud", BaseURL: cloud.URL()}}})
			req := ask("our secret roadmap")
			req.Providers = []string{"local"}
			res, err := c.Stream(t.Context(), req, nil)
			wantCode(t, err, konstruct.EUNAVAILABLE)
			for _, a := range res.Attempts {
				if a.Provider != "local" {
					t.Errorf("attempt on %q for a tenant restricted to local", a.Provider)
				}
			}
		}
		for _, r := range cloud.Requests() {
			for _, m := range r.Messages {
				if strings.Contains(m.Content, "secret roadmap") {
					t.Fatal("the restricted tenant's prompt reached the cloud provider")
				}
			}
		}
	})
	t.Run("order", func(t *testing.T) {
		t.Parallel()
		c := client(t, llm.Config{Providers: []llm.Provider{{Name: "a", BaseURL: down.URL()}, {Name: "b", BaseURL: other.URL()}}})
		req := ask("hi")
		req.Providers = []string{"b", "a"}
		res, err := c.Stream(t.Context(), req, nil)
		if err != nil || res.Provider != "b" || len(res.Attempts) != 1 {
			t.Fatalf("got %q from %q after %d attempts, %v; want b first", res.Text, res.Provider, len(res.Attempts), err)
		}
	})
	t.Run("unknown name", func(t *testing.T) {
		t.Parallel()
		c := client(t, llm.Config{Providers: []llm.Provider{{Name: "a", BaseURL: other.URL()}}})
		req := ask("hi")
		req.Providers = []string{"a", "nope"}
		_, err := c.Stream(t.Context(), req, nil)
		wantCode(t, err, konstruct.EINVALID)
		if !strings.Contains(konstruct.ErrorMessage(err), `"nope"`) {
			t.Errorf("message %q does not name the unknown provider", konstruct.ErrorMessage(err))
		}
	})
}

func TestIdleTimeoutMidStreamKeepsPartialAndDoesNotFallBack(t *testing.T) {
	t.Parallel()
	first := fake(t, llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply {
		return llmfake.Reply{Chunks: []string{"Part ", "one ", "never"}, HangAfter: 2}
	}))
	second := fake(t)
	c := client(t, llm.Config{
		Providers: []llm.Provider{{Name: "one", BaseURL: first.URL()}, {Name: "two", BaseURL: second.URL()}},
		Timeouts:  llm.Timeouts{FirstToken: 5 * time.Second, Idle: 200 * time.Millisecond},
	})
	var shown strings.Builder
	res, err := c.Stream(t.Context(), ask("hi"), func(d string) error { shown.WriteString(d); return nil })
	wantCode(t, err, konstruct.ETIMEOUT)
	if !errors.Is(err, llm.ErrIdleTimeout) {
		t.Errorf("err = %v, want ErrIdleTimeout in the chain", err)
	}
	var ie *llm.InterruptedError
	if !errors.As(err, &ie) {
		t.Fatalf("err = %v, want an *InterruptedError", err)
	}
	if ie.Partial.Text != "Part one " || res.Text != "Part one " || shown.String() != "Part one " {
		t.Errorf("partial = %q, result = %q, shown = %q; want %q", ie.Partial.Text, res.Text, shown.String(), "Part one ")
	}
	if ie.Partial.Provider != "one" || !ie.Partial.UsageEstimated || ie.Partial.CompletionTokens == 0 {
		t.Errorf("partial result = %+v", ie.Partial)
	}
	if n := len(second.Requests()); n != 0 {
		t.Errorf("second provider saw %d requests; no fallback is allowed after text was shown", n)
	}
}

func TestTotalTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		reply     llmfake.Reply
		timeouts  llm.Timeouts
		delivered bool
	}{
		{
			name:      "mid-stream",
			reply:     llmfake.Reply{Text: strings.Repeat("word ", 200), TokenDelay: 20 * time.Millisecond},
			timeouts:  llm.Timeouts{Total: 300 * time.Millisecond},
			delivered: true,
		},
		{
			name:     "before the first token",
			reply:    llmfake.Reply{Text: "late", FirstTokenDelay: 5 * time.Second},
			timeouts: llm.Timeouts{Total: 300 * time.Millisecond},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := fake(t, llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply { return tt.reply }))
			c := client(t, llm.Config{Providers: []llm.Provider{{BaseURL: s.URL()}}, Timeouts: tt.timeouts})
			start := time.Now()
			res, err := c.Stream(t.Context(), ask("hi"), nil)
			wantCode(t, err, konstruct.ETIMEOUT)
			if !errors.Is(err, llm.ErrTotalTimeout) {
				t.Errorf("err = %v, want ErrTotalTimeout in the chain", err)
			}
			var ie *llm.InterruptedError
			if got := errors.As(err, &ie); got != tt.delivered {
				t.Errorf("InterruptedError present = %v, want %v", got, tt.delivered)
			}
			if tt.delivered && res.Text == "" {
				t.Error("partial text lost")
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("call took %v, far past its total timeout", d)
			}
		})
	}
}

func TestModelSelectionPerProvider(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		models    []string
		requested string
		want      string
	}{
		{"no list sends the requested model", nil, "llama3", "llama3"},
		{"listed model is used", []string{"a1", "a2"}, "a2", "a2"},
		{"unlisted model becomes the first listed", []string{"a1", "a2"}, "llama3", "a1"},
		{"empty request takes the default", nil, "", "fake-model"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := fake(t)
			c := client(t, llm.Config{Providers: []llm.Provider{{BaseURL: s.URL(), Models: tt.models}}})
			req := ask("hi")
			req.Model = tt.requested
			res, err := c.Stream(t.Context(), req, nil)
			if err != nil {
				t.Fatal(err)
			}
			if reqs := s.Requests(); len(reqs) != 1 || reqs[0].Model != tt.want || res.Model != tt.want {
				t.Errorf("model sent = %+v, result %q; want %q", reqs, res.Model, tt.want)
			}
		})
	}
}

func TestFallbackUsesEachProvidersModel(t *testing.T) {
	t.Parallel()
	first := fake(t, llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply { return llmfake.Reply{Status: 502} }))
	second := fake(t)
	c := client(t, llm.Config{MaxRetries: -1, Providers: []llm.Provider{
		{Name: "gpu", BaseURL: first.URL()},
		{Name: "cpu", BaseURL: second.URL(), Models: []string{"small"}},
	}})
	res, err := c.Stream(t.Context(), llm.Request{Model: "big", Messages: ask("hi").Messages}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first.Requests()[0].Model != "big" || second.Requests()[0].Model != "small" || res.Model != "small" {
		t.Errorf("models: first %q, second %q, result %q", first.Requests()[0].Model, second.Requests()[0].Model, res.Model)
	}
}

func TestFinalErrorCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		reply llmfake.Reply
		key   string // server's required key; the client sends "wrong-key"
		want  string
	}{
		{name: "bad key", key: "sk-right", want: konstruct.EUNAUTHORIZED},
		{name: "unknown model", reply: llmfake.Reply{Status: 404}, want: konstruct.EINVALID},
		{name: "rate limited", reply: llmfake.Reply{Status: 429}, want: konstruct.ERATELIMIT},
		{name: "server errors", reply: llmfake.Reply{Status: 500}, want: konstruct.EUNAVAILABLE},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := []llmfake.Option{llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply { return tt.reply })}
			if tt.key != "" {
				opts = append(opts, llmfake.WithAPIKey(tt.key))
			}
			s := fake(t, opts...)
			var logs bytes.Buffer
			var mu sync.Mutex
			c := client(t, llm.Config{
				Providers: []llm.Provider{{BaseURL: s.URL(), APIKey: "wrong-key"}},
				Logger:    slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug})),
			})
			_, err := c.Stream(t.Context(), ask("hi"), nil)
			wantCode(t, err, tt.want)
			mu.Lock()
			defer mu.Unlock()
			if strings.Contains(logs.String(), "wrong-key") || strings.Contains(err.Error(), "wrong-key") {
				t.Errorf("API key leaked into logs or error: %s / %v", logs.String(), err)
			}
			if logs.Len() == 0 {
				t.Error("failed attempt was not logged")
			}
		})
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestAPIKeySentAsBearer(t *testing.T) {
	t.Parallel()
	s := fake(t, llmfake.WithAPIKey("sk-right"))
	c := client(t, llm.Config{Providers: []llm.Provider{{BaseURL: s.URL(), APIKey: "sk-right"}}})
	if _, err := c.Stream(t.Context(), ask("hi"), nil); err != nil {
		t.Fatal(err)
	}
	// Without a key, no Authorization header at all (Ollama, llama.cpp).
	s2 := fake(t)
	c2 := client(t, llm.Config{Providers: []llm.Provider{{BaseURL: s2.URL()}}})
	if _, err := c2.Stream(t.Context(), ask("hi"), nil); err != nil {
		t.Fatal(err)
	}
	if h := s2.Requests()[0].Header.Get("Authorization"); h != "" {
		t.Errorf("Authorization = %q with no key configured", h)
	}
}

func TestAllProvidersDown(t *testing.T) {
	t.Parallel()
	c := client(t, llm.Config{Providers: []llm.Provider{
		{Name: "a", BaseURL: closedURL(t)}, {Name: "b", BaseURL: closedURL(t)},
	}})
	res, err := c.Stream(t.Context(), ask("hi"), nil)
	wantCode(t, err, konstruct.EUNAVAILABLE)
	if len(res.Attempts) != 2 {
		t.Errorf("attempts = %d, want 2", len(res.Attempts))
	}
}

func TestDeltaCallbackErrorAborts(t *testing.T) {
	t.Parallel()
	first := fake(t, llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply {
		return llmfake.Reply{Text: "a b c d e f", TokenDelay: 10 * time.Millisecond}
	}))
	second := fake(t)
	c := client(t, llm.Config{Providers: []llm.Provider{{BaseURL: first.URL()}, {Name: "two", BaseURL: second.URL()}}})
	stop := errors.New("slack says no")
	n := 0
	res, err := c.Stream(t.Context(), ask("hi"), func(string) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("err = %v, want the callback's error", err)
	}
	if res.Text != "a b " || len(second.Requests()) != 0 {
		t.Errorf("text %q, second provider requests %d", res.Text, len(second.Requests()))
	}
}

func TestCallerCancelEndsHungStream(t *testing.T) {
	t.Parallel()
	s := fake(t, llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply {
		return llmfake.Reply{Text: "x", FirstTokenDelay: time.Hour}
	}))
	c := client(t, llm.Config{Providers: []llm.Provider{{BaseURL: s.URL()}}})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Stream(ctx, ask("hi"), nil)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the caller's deadline", err)
	}
	wantCode(t, err, konstruct.ETIMEOUT)
}

func TestInvalidRequests(t *testing.T) {
	t.Parallel()
	s := fake(t)
	c := client(t, llm.Config{Providers: []llm.Provider{{BaseURL: s.URL()}}})
	for _, req := range []llm.Request{
		{},
		{Messages: []llm.Message{{Role: "tool", Content: "x"}}},
	} {
		_, err := c.Stream(t.Context(), req, nil)
		wantCode(t, err, konstruct.EINVALID)
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("%d requests sent for invalid input", n)
	}
}

func TestNamesAndOptionsSent(t *testing.T) {
	t.Parallel()
	s := fake(t)
	c := client(t, llm.Config{Providers: []llm.Provider{{BaseURL: s.URL()}}})
	temp := 0.2
	_, err := c.Stream(t.Context(), llm.Request{MaxTokens: 77, Temperature: &temp, Messages: []llm.Message{
		{Role: "user", Name: "Ada Lovelace (she/her)", Content: "hi"},
		{Role: "assistant", Name: "Mara", Content: "hello"},
		{Role: "user", Name: "  ", Content: "again"},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := s.Requests()[0]
	if r.MaxTokens != 77 {
		t.Errorf("MaxTokens = %d", r.MaxTokens)
	}
	names := []string{r.Messages[0].Name, r.Messages[1].Name, r.Messages[2].Name}
	if want := []string{"Ada_Lovelace_she_her", "Mara", ""}; !slices.Equal(names, want) {
		t.Errorf("names = %q, want %q", names, want)
	}
}

func TestListModelsAndProbe(t *testing.T) {
	t.Parallel()
	s := fake(t, llmfake.WithModels("llama3", "qwen2"))
	down := closedURL(t)
	c := client(t, llm.Config{DefaultModel: "qwen2", Providers: []llm.Provider{
		{Name: "local", BaseURL: s.URL()}, {Name: "down", BaseURL: down},
	}})
	models, err := c.ListModels(t.Context(), "local")
	if err != nil || !slices.Equal(models, []string{"llama3", "qwen2"}) {
		t.Fatalf("ListModels = %q, %v", models, err)
	}
	model, err := c.Probe(t.Context(), "")
	if err != nil || model != "qwen2" {
		t.Fatalf("Probe = %q, %v", model, err)
	}
	if r := s.Requests(); len(r) != 1 || r[0].MaxTokens != 1 || !r[0].Stream {
		t.Errorf("probe request = %+v, want one streamed request with max_tokens 1", r)
	}
	if _, err := c.ListModels(t.Context(), "down"); konstruct.ErrorCode(err) != konstruct.EUNAVAILABLE {
		t.Errorf("ListModels(down) err = %v", err)
	}
	if _, err := c.Probe(t.Context(), "down"); konstruct.ErrorCode(err) != konstruct.EUNAVAILABLE {
		t.Errorf("Probe(down) err = %v", err)
	}
	if _, err := c.ListModels(t.Context(), "nope"); konstruct.ErrorCode(err) != konstruct.ENOTFOUND {
		t.Errorf("ListModels(nope) err = %v", err)
	}
	if got := c.Providers(); !slices.Equal(got, []string{"local", "down"}) {
		t.Errorf("Providers = %q", got)
	}
}

func TestProbeWithoutDefaultModelUsesListedModel(t *testing.T) {
	t.Parallel()
	s := fake(t, llmfake.WithModels("only-one"), llmfake.WithAPIKey("k"))
	c, err := llm.New(llm.Config{Providers: []llm.Provider{{BaseURL: s.URL(), APIKey: "k"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	model, err := c.Probe(t.Context(), "")
	if err != nil || model != "only-one" {
		t.Fatalf("Probe = %q, %v", model, err)
	}
	bad := fake(t, llmfake.WithAPIKey("k"))
	c2 := client(t, llm.Config{Providers: []llm.Provider{{BaseURL: bad.URL(), APIKey: "nope"}}})
	if _, err := c2.Probe(t.Context(), ""); konstruct.ErrorCode(err) != konstruct.EUNAUTHORIZED {
		t.Errorf("Probe with a bad key: %v", err)
	}
}

func TestManyConcurrentStreams(t *testing.T) {
	t.Parallel()
	s := fake(t, llmfake.WithoutRecording(), llmfake.WithHandler(func(r llmfake.ChatRequest) llmfake.Reply {
		return llmfake.Reply{Text: "answer to " + r.LastUser(), TokenDelay: time.Millisecond}
	}))
	// A generous total: 200 streams at once under the race detector on a
	// busy machine; the test is about correctness, not speed.
	c := client(t, llm.Config{Providers: []llm.Provider{{BaseURL: s.URL()}}, Timeouts: llm.Timeouts{Total: time.Minute}})
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Go(func() {
			q := fmt.Sprintf("q%d", i)
			res, err := c.Stream(t.Context(), ask(q), nil)
			if err == nil && res.Text != "answer to "+q {
				err = fmt.Errorf("got %q for %s", res.Text, q)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := llm.Provider{BaseURL: "http://127.0.0.1:11434/v1/"}
	tests := []struct {
		name string
		cfg  llm.Config
		ok   bool
	}{
		{"one provider", llm.Config{Providers: []llm.Provider{ok}}, true},
		{"no provider", llm.Config{}, false},
		{"bad url", llm.Config{Providers: []llm.Provider{{BaseURL: "127.0.0.1:11434"}}}, false},
		{"duplicate names", llm.Config{Providers: []llm.Provider{ok, ok}}, false},
		{"negative timeout", llm.Config{Providers: []llm.Provider{ok}, Timeouts: llm.Timeouts{Idle: -1}}, false},
		{"client timeout", llm.Config{Providers: []llm.Provider{ok}, HTTPClient: &http.Client{Timeout: time.Second}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if _, err := llm.New(tt.cfg); (err == nil) != tt.ok {
				t.Fatalf("New() = %v, want ok=%v", err, tt.ok)
			} else if err != nil {
				wantCode(t, err, konstruct.EINVALID)
			}
		})
	}
}

func TestEstimateTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int
	}{
		{"", 0},
		{"a", 1},
		{"abcd", 1},
		{"abcde", 2},
		{strings.Repeat("x", 400), 100},
		{"日本語", 3},
	}
	for _, tt := range tests {
		if got := llm.EstimateTokens(tt.in); got != tt.want {
			t.Errorf("EstimateTokens(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
	msgs := []llm.Message{{Role: "user", Content: "abcd"}}
	if got, want := llm.EstimateMessagesTokens(msgs), 1+2*llm.MessageOverhead; got != want {
		t.Errorf("EstimateMessagesTokens = %d, want %d", got, want)
	}
}

// TestServerThatNeverAnswers covers a server that accepts the connection but
// never sends response headers: the first-token timer must still end the
// attempt and the next provider must answer.
func TestServerThatNeverAnswers(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var conns []net.Conn
	var mu sync.Mutex
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn) // hold it open, say nothing
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	second := fake(t)
	c := client(t, llm.Config{
		Providers: []llm.Provider{{Name: "mute", BaseURL: "http://" + ln.Addr().String() + "/v1/"}, {Name: "ok", BaseURL: second.URL()}},
		Timeouts:  llm.Timeouts{FirstToken: 200 * time.Millisecond},
	})
	res, err := c.Stream(t.Context(), ask("hi"), nil)
	if err != nil || res.Provider != "ok" {
		t.Fatalf("Stream = %+v, %v", res, err)
	}
	if !errors.Is(res.Attempts[0].Err, llm.ErrFirstTokenTimeout) {
		t.Errorf("first attempt err = %v", res.Attempts[0].Err)
	}
}

// TestReasoningKeepsFirstTokenTimerAtBay: a thinking model streams reasoning
// for longer than the first-token timeout; that is activity, not a hang.
func TestReasoningKeepsFirstTokenTimerAtBay(t *testing.T) {
	t.Parallel()
	s := fake(t, llmfake.WithHandler(func(llmfake.ChatRequest) llmfake.Reply {
		// 3 s of reasoning, a chunk every 50 ms: twice the first-token
		// timeout, whose 1.5 s leave a busy machine room for the first chunk.
		return llmfake.Reply{Reasoning: slices.Repeat([]string{"hmm "}, 60), TokenDelay: 50 * time.Millisecond, Text: "42"}
	}))
	second := fake(t)
	c := client(t, llm.Config{
		Providers: []llm.Provider{{BaseURL: s.URL()}, {Name: "two", BaseURL: second.URL()}},
		Timeouts:  llm.Timeouts{FirstToken: 1500 * time.Millisecond, Idle: 2 * time.Second},
	})
	var shown strings.Builder
	res, err := c.Stream(t.Context(), ask("hi"), func(d string) error { shown.WriteString(d); return nil })
	if err != nil || res.Text != "42" || shown.String() != "42" || len(second.Requests()) != 0 {
		t.Fatalf("Stream = %q (shown %q), %v; second saw %d", res.Text, shown.String(), err, len(second.Requests()))
	}
}
