// Package llmfake is an OpenAI-compatible chat server over real HTTP for
// tests, the demo (`konstruct demo --llm=echo`) and benchmarks. It speaks the
// subset of the API Konstruct uses: POST /v1/chat/completions (streamed as
// server-sent events, or as one JSON object) and GET /v1/models.
//
// A handler decides every reply, including failures (an HTTP status, a slow
// first token, a stream that hangs half-way), so the llm package's fallback
// and timeout paths can be exercised against a real socket.
package llmfake

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/konstruct/konstruct/internal/wait"
)

// ChatRequest is what the server understood of one chat completion request.
type ChatRequest struct {
	Model    string
	Messages []struct{ Role, Name, Content string }
	Stream   bool
	// IncludeUsage reports stream_options.include_usage.
	IncludeUsage bool
	MaxTokens    int
	Header       http.Header
}

// LastUser returns the content of the last user message, or "".
func (r ChatRequest) LastUser() string {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if r.Messages[i].Role == "user" {
			return r.Messages[i].Content
		}
	}
	return ""
}

// Reply is what the server answers to one request.
type Reply struct {
	Text string
	// Chunks, when set, are the exact content deltas to send (Text is then
	// ignored); otherwise Text is split into word-ish chunks.
	Chunks []string
	// Status other than 0 or 200 answers with an OpenAI-style error JSON.
	Status int
	// RetryAfter, in seconds, is sent as the Retry-After header with an error status.
	RetryAfter int
	// FirstTokenDelay is waited after the response headers (and the initial
	// role-only chunk) before the first content chunk.
	FirstTokenDelay time.Duration
	// TokenDelay is waited between content chunks.
	TokenDelay time.Duration
	// HangAfter > 0 stops after that many content chunks and hangs until the
	// client goes away or the server closes.
	HangAfter int
	// Reasoning chunks are sent as delta.reasoning_content (as vLLM and
	// LiteLLM do for thinking models) before the content, TokenDelay apart.
	Reasoning []string
	// NoUsage leaves out the usage chunk even when the client asked for it,
	// like servers that do not support stream_options.
	NoUsage bool
}

// Option configures a Server.
type Option func(*Server)

// WithHandler sets the reply handler (see SetHandler).
func WithHandler(h func(ChatRequest) Reply) Option { return func(s *Server) { s.handler = h } }

// WithModels sets what GET /v1/models lists (default: "fake-model").
func WithModels(models ...string) Option { return func(s *Server) { s.models = models } }

// WithAPIKey makes the server answer 401 unless the request carries
// "Authorization: Bearer key".
func WithAPIKey(key string) Option { return func(s *Server) { s.apiKey = key } }

// WithoutRecording stops Requests from keeping requests, for benchmarks that
// send many.
func WithoutRecording() Option { return func(s *Server) { s.noRecord = true } }

// Server is a running fake. Create it with New; Close it when done.
type Server struct {
	handler  func(ChatRequest) Reply
	models   []string
	apiKey   string
	noRecord bool

	ln     net.Listener
	srv    *http.Server
	ctx    context.Context // cancelled by Close, ends hung handlers
	cancel context.CancelFunc
	serve  sync.WaitGroup
	active sync.WaitGroup

	mu       sync.Mutex
	requests []ChatRequest
	closed   bool
}

// New starts a server on 127.0.0.1 at a free port.
func New(opts ...Option) *Server {
	s := &Server{handler: defaultHandler, models: []string{"fake-model"}}
	for _, o := range opts {
		o(s)
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("llmfake: listen: %v", err))
	}
	s.ln = ln
	s.ctx, s.cancel = context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.track(s.chat))
	mux.HandleFunc("GET /v1/models", s.track(s.listModels))
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
	}
	s.serve.Add(1)
	go func() {
		defer s.serve.Done()
		_ = s.srv.Serve(ln)
	}()
	return s
}

// URL is the OpenAI base URL, with the /v1/ suffix.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() + "/v1/" }

// Addr is the listening host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server, ending hung handlers and open streams, and waits
// for its goroutines. It is safe to call more than once.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	_ = s.srv.Close() // closes the listener and every connection
	s.serve.Wait()
	s.active.Wait()
}

// SetHandler replaces the reply handler. The default echoes the last user
// message prefixed with "Echo: ".
func (s *Server) SetHandler(h func(ChatRequest) Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handler = h
}

// Requests returns the chat requests received so far, oldest first.
func (s *Server) Requests() []ChatRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ChatRequest(nil), s.requests...)
}

func defaultHandler(req ChatRequest) Reply { return Reply{Text: "Echo: " + req.LastUser()} }

// Echo is a canned offline answer: it says plainly that it comes from an
// offline stand-in, not a language model, and quotes the user's last message.
func Echo(req ChatRequest) Reply {
	last := strings.TrimSpace(req.LastUser())
	if last == "" {
		last = "(nothing)"
	}
	quoted := "> " + strings.ReplaceAll(last, "\n", "\n> ")
	return Reply{
		Text: "This is a canned echo from an offline stand-in — no language model is connected, " +
			"so I can only repeat what you wrote:\n\n" + quoted,
		TokenDelay: 20 * time.Millisecond,
	}
}

// track counts running handlers so Close can wait for them.
func (s *Server) track(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			http.Error(w, "closed", http.StatusServiceUnavailable)
			return
		}
		s.active.Add(1)
		s.mu.Unlock()
		defer s.active.Done()
		if s.apiKey != "" && r.Header.Get("Authorization") != "Bearer "+s.apiKey {
			writeError(w, http.StatusUnauthorized, 0, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
			return
		}
		h(w, r)
	}
}

func (s *Server) listModels(w http.ResponseWriter, _ *http.Request) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	out := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, m := range s.models {
		out.Data = append(out.Data, model{ID: m, Object: "model", Created: 1700000000, OwnedBy: "llmfake"})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// wireRequest is the JSON body of a chat completion request.
type wireRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string          `json:"role"`
		Name    string          `json:"name"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Stream              bool `json:"stream"`
	MaxTokens           int  `json:"max_tokens"`
	MaxCompletionTokens int  `json:"max_completion_tokens"`
	StreamOptions       struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

// content reads a message content: a string or an array of text parts.
func content(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) == nil {
		var b strings.Builder
		for _, p := range parts {
			b.WriteString(p.Text)
		}
		return b.String()
	}
	return ""
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	var wr wireRequest
	if err := json.NewDecoder(r.Body).Decode(&wr); err != nil {
		writeError(w, http.StatusBadRequest, 0, "invalid JSON body", "invalid_request_error", "")
		return
	}
	req := ChatRequest{
		Model:        wr.Model,
		Stream:       wr.Stream,
		IncludeUsage: wr.StreamOptions.IncludeUsage,
		MaxTokens:    max(wr.MaxTokens, wr.MaxCompletionTokens),
		Header:       r.Header.Clone(),
	}
	for _, m := range wr.Messages {
		req.Messages = append(req.Messages, struct{ Role, Name, Content string }{m.Role, m.Name, content(m.Content)})
	}
	s.mu.Lock()
	if !s.noRecord {
		s.requests = append(s.requests, req)
	}
	h := s.handler
	s.mu.Unlock()

	reply := h(req)
	if reply.Status != 0 && reply.Status != http.StatusOK {
		writeError(w, reply.Status, reply.RetryAfter, fmt.Sprintf("llmfake: status %d", reply.Status), errorType(reply.Status), "")
		return
	}
	chunks := reply.Chunks
	if chunks == nil {
		chunks = Split(reply.Text)
	}
	id := "chatcmpl-fake-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	usage := map[string]int{"prompt_tokens": promptTokens(req), "completion_tokens": len(chunks)}
	usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
	ctx := r.Context() // derived from s.ctx, cancelled on Close and client disconnect

	if !req.Stream {
		if !wait.Sleep(ctx, reply.FirstTokenDelay) {
			return
		}
		if reply.HangAfter > 0 {
			<-ctx.Done()
			return
		}
		out := map[string]any{
			"id": id, "object": "chat.completion", "created": time.Now().Unix(), "model": req.Model,
			"choices": []any{map[string]any{
				"index":         0,
				"message":       map[string]any{"role": "assistant", "content": strings.Join(chunks, "")},
				"finish_reason": "stop",
			}},
		}
		if !reply.NoUsage {
			out["usage"] = usage
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
		return
	}

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(v any) bool {
		b, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	chunk := func(delta map[string]any, finish any) map[string]any {
		return map[string]any{
			"id": id, "object": "chat.completion.chunk", "created": time.Now().Unix(), "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}},
		}
	}
	// Like OpenAI: a role-only chunk first, which carries no text.
	if !send(chunk(map[string]any{"role": "assistant", "content": ""}, nil)) {
		return
	}
	if !wait.Sleep(ctx, reply.FirstTokenDelay) {
		return
	}
	for _, r := range reply.Reasoning {
		if !send(chunk(map[string]any{"reasoning_content": r}, nil)) || !wait.Sleep(ctx, reply.TokenDelay) {
			return
		}
	}
	for i, c := range chunks {
		if reply.HangAfter > 0 && i == reply.HangAfter {
			<-ctx.Done()
			return
		}
		if i > 0 && !wait.Sleep(ctx, reply.TokenDelay) {
			return
		}
		if !send(chunk(map[string]any{"content": c}, nil)) {
			return
		}
	}
	if reply.HangAfter > 0 && reply.HangAfter >= len(chunks) {
		<-ctx.Done()
		return
	}
	if !send(chunk(map[string]any{}, "stop")) {
		return
	}
	if req.IncludeUsage && !reply.NoUsage {
		if !send(map[string]any{
			"id": id, "object": "chat.completion.chunk", "created": time.Now().Unix(), "model": req.Model,
			"choices": []any{}, "usage": usage,
		}) {
			return
		}
	}
	_, _ = fmt.Fprint(w, "data: [DONE]\n\n")
	_ = rc.Flush()
}

// promptTokens is a rough count (words and punctuation) standing in for a
// tokenizer; tests only need it to be positive and deterministic.
func promptTokens(req ChatRequest) int {
	n := 0
	for _, m := range req.Messages {
		n += 4 + len(Split(m.Content))
	}
	return n
}

func errorType(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return "invalid_request_error"
	case status == http.StatusTooManyRequests:
		return "rate_limit_exceeded"
	case status >= 500:
		return "server_error"
	default:
		return "invalid_request_error"
	}
}

func writeError(w http.ResponseWriter, status, retryAfter int, msg, typ, code string) {
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	var c any
	if code != "" {
		c = code
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": c}})
}

// Split cuts text into word-ish chunks the way token streams look: each chunk
// is a run of non-space characters followed by the whitespace after it.
// Joining the chunks gives back text exactly.
func Split(text string) []string {
	var out []string
	start := 0
	inSpace := false
	for i, r := range text {
		sp := unicode.IsSpace(r)
		if inSpace && !sp {
			out = append(out, text[start:i])
			start = i
		}
		inSpace = sp
	}
	if start < len(text) {
		out = append(out, text[start:])
	}
	return out
}
