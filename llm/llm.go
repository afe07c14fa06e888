// Package llm talks to any OpenAI-compatible chat endpoint (Ollama, vLLM,
// llama.cpp server, LiteLLM, OpenAI) through openai-go, always streaming, with
// an ordered list of providers to fall back on and three timeouts (to the
// first token, idle between chunks, total) so that a hung server never hangs
// a reply.
//
// Errors are *konstruct.Error values whose code the worker maps to what a
// person reads in Slack; the cause stays wrapped for logs.
package llm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/respjson"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/wait"
)

// Causes wrapped in the errors Stream returns; test them with errors.Is.
var (
	ErrFirstTokenTimeout = errors.New("no text within the first-token timeout")
	ErrIdleTimeout       = errors.New("stream idle longer than the idle timeout")
	ErrTotalTimeout      = errors.New("answer not complete within the total timeout")
	ErrEmptyAnswer       = errors.New("the model returned no text")
	errAborted           = errors.New("aborted by the delta callback")
)

// Message is one chat turn.
type Message struct {
	Role    string // system | user | assistant
	Name    string // optional speaker; sanitized to what the API accepts
	Content string
}

// Request is one chat completion.
type Request struct {
	Model       string // "" means Config.DefaultModel
	Messages    []Message
	MaxTokens   int // 0 leaves it to the server
	Temperature *float64
	// Tenant is whose request this is: slots of a provider with a bound
	// are shared fairly between tenants (Config.Gate).
	Tenant string
	// Providers, when set, are the only providers the request may reach,
	// in the order they are tried (a tenant's agent names them, so that an
	// on-prem-only tenant never falls back to an external API). Empty means
	// every configured provider, in configured order. A name that is not
	// configured fails the request (EINVALID) before anything is sent.
	Providers []string
}

// Result describes a completed (or, inside an InterruptedError, a partial)
// answer.
type Result struct {
	Text             string
	Provider, Model  string
	PromptTokens     int
	CompletionTokens int
	// UsageEstimated is true when the server reported no usage and the token
	// counts come from EstimateTokens.
	UsageEstimated   bool
	TimeToFirstToken time.Duration // from the start of the Stream call
	Latency          time.Duration
	Attempts         []Attempt
}

// Attempt is one request to one provider.
type Attempt struct {
	Provider, Model string
	Err             error // nil when this attempt produced the answer
	Status          int   // HTTP status when the server answered with an error
	TTFT, Latency   time.Duration
	// SlotWait is how long the attempt waited for one of the provider's
	// slots (Config.Gate) before it started.
	SlotWait time.Duration
}

// InterruptedError is the cause wrapped in the *konstruct.Error that Stream
// returns when a stream broke after text was already delivered. Partial holds
// what was received; there is no fallback then, since the caller already
// showed that text.
type InterruptedError struct {
	Partial Result
	Err     error
}

func (e *InterruptedError) Error() string {
	return fmt.Sprintf("stream from %s interrupted after %d characters: %v", e.Partial.Provider, len(e.Partial.Text), e.Err)
}

func (e *InterruptedError) Unwrap() error { return e.Err }

type provider struct {
	Provider
	name   string
	chat   openai.ChatCompletionService
	models openai.ModelService
}

// Client streams chat completions with fallback. It is safe for concurrent use.
type Client struct {
	cfg       Config
	providers []*provider
	ownHTTP   *http.Client // non-nil when New built the HTTP client
}

// New validates cfg and returns a Client. Call Close when done.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, &konstruct.Error{Code: konstruct.EINVALID, Message: err.Error(), Err: err}
	}
	cfg = cfg.withDefaults()
	c := &Client{cfg: cfg}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = newHTTPClient()
		c.ownHTTP = hc
	}
	for _, p := range cfg.Providers {
		// The services are built from explicit options only: openai.NewClient
		// would also read OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_ORG_ID… from
		// the environment and send them to an on-prem server. Retries are ours
		// (MaxRetries = 0 here) so each one is an Attempt and fallback stays in
		// one place.
		opts := []option.RequestOption{
			option.WithBaseURL(p.BaseURL),
			option.WithHTTPClient(hc),
			option.WithMaxRetries(0),
		}
		if p.APIKey != "" {
			opts = append(opts, option.WithAPIKey(p.APIKey))
		}
		c.providers = append(c.providers, &provider{
			Provider: p,
			name:     providerName(p),
			chat:     openai.NewChatCompletionService(opts...),
			models:   openai.NewModelService(opts...),
		})
	}
	return c, nil
}

// newHTTPClient is tuned for many concurrent streams to few hosts. It has no
// overall Timeout (streams are long); a dial timeout keeps a black-holed
// address from using up the first-token budget.
func newHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.MaxIdleConns = 512
	t.MaxIdleConnsPerHost = 256
	t.IdleConnTimeout = 90 * time.Second
	return &http.Client{Transport: t}
}

// Close releases idle connections of the client's own HTTP transport.
func (c *Client) Close() {
	if c.ownHTTP != nil {
		c.ownHTTP.CloseIdleConnections()
	}
}

// Providers returns the provider names in fallback order.
func (c *Client) Providers() []string {
	out := make([]string, len(c.providers))
	for i, p := range c.providers {
		out[i] = p.name
	}
	return out
}

// Stream generates an answer, sending each text delta to onDelta as it
// arrives; onDelta returning an error aborts the call with that error.
//
// Providers are tried in order: the configured order, or req.Providers,
// which also restricts them. A provider is asked for the requested model
// when its Models list is empty or contains it, else for its first listed
// model. Before any text was delivered, Stream moves to the next provider
// only on a transient failure: a connection error, a 5xx or 429 (each first
// retried MaxRetries times on the same provider, with backoff honouring
// Retry-After up to MaxRetryWait), a 408, a first-token timeout, a broken or
// empty stream. A refusal (400, 401, 403, 404 and the other 4xx: a bad key,
// an unknown model, a request the server will not take) ends the call
// there: sending the same prompt to the next provider would only move the
// tenant's data to an endpoint it was not meant for. The error's code comes
// from the last attempt: EUNAUTHORIZED (401/403), EINVALID (other 4xx),
// ERATELIMIT (429), ETIMEOUT, else EUNAVAILABLE; for a 4xx its message names
// the provider and the status.
//
// Once text was delivered there is no fallback, since the caller has already
// shown that text: an idle timeout, a broken stream or the total timeout ends
// the call with a *konstruct.Error (ETIMEOUT or EUNAVAILABLE) wrapping an
// *InterruptedError that holds the partial Result, which is also returned.
func (c *Client) Stream(ctx context.Context, req Request, onDelta func(delta string) error) (Result, error) {
	start := time.Now()
	var res Result
	model := req.Model
	if model == "" {
		model = c.cfg.DefaultModel
	}
	params, err := c.params(req)
	if err != nil {
		return res, err
	}
	providers, err := c.route(req.Providers)
	if err != nil {
		return res, err
	}
	if model == "" && !c.anyListsModels() {
		return res, konstruct.Errorf(konstruct.EINVALID, "No language model is configured.")
	}
	if onDelta == nil {
		onDelta = func(string) error { return nil }
	}
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.Timeouts.Total, ErrTotalTimeout)
	defer cancel()

	var last Attempt
	for _, p := range providers {
		if last.Err != nil && !transient(last) {
			break // refused: no fallback
		}
		params.Model = p.modelFor(model)
		if params.Model == "" {
			continue
		}
		for try := 0; ; try++ {
			release, waited, err := c.slot(ctx, p, req.Tenant)
			if err != nil {
				res.Latency = time.Since(start)
				if ctx.Err() != nil {
					return res, contextError(ctx)
				}
				return res, &konstruct.Error{Code: konstruct.EUNAVAILABLE, Message: "No slot of the language model could be taken.", Err: err}
			}
			attemptStart := time.Now()
			st := &streamState{}
			att := c.attempt(ctx, p, params, onDelta, st)
			release()
			att.SlotWait = waited
			res.Attempts = append(res.Attempts, att)
			c.report(att)
			last = att
			res.Provider, res.Model = att.Provider, att.Model
			if st.delivered {
				res.Text = st.text.String()
				res.TimeToFirstToken = st.firstAt.Sub(start)
				c.usage(&res, req, st)
			}
			res.Latency = time.Since(start)
			if att.Err == nil {
				return res, nil
			}
			if st.callbackErr != nil {
				return res, fmt.Errorf("llm: deliver delta: %w", st.callbackErr)
			}
			if st.delivered {
				code, msg := konstruct.EUNAVAILABLE, "The language model stopped in the middle of its answer."
				if errors.Is(att.Err, ErrIdleTimeout) || errors.Is(att.Err, ErrTotalTimeout) {
					code, msg = konstruct.ETIMEOUT, "The language model took too long to finish its answer."
				}
				return res, &konstruct.Error{Code: code, Message: msg, Err: &InterruptedError{Partial: res, Err: att.Err}}
			}
			if ctx.Err() != nil {
				return res, contextError(ctx)
			}
			if !retryable(att.Status) || try >= c.cfg.MaxRetries {
				break
			}
			pause, ok := c.retryWait(try, att.Err)
			if !ok {
				break
			}
			c.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "llm retry", slog.String("provider", p.name),
				slog.Int("status", att.Status), slog.Duration("wait", pause), slog.Duration("attempt_latency", time.Since(attemptStart)))
			if !wait.Sleep(ctx, pause) {
				return res, contextError(ctx)
			}
		}
	}
	res.Latency = time.Since(start)
	return res, finalError(last, len(res.Attempts))
}

// slot waits for one of p's slots when it has a bound; release gives it
// back (a no-op without one).
func (c *Client) slot(ctx context.Context, p *provider, tenant string) (release func(), waited time.Duration, err error) {
	if c.cfg.Gate == nil || p.MaxConcurrency <= 0 {
		return func() {}, 0, nil
	}
	start := time.Now()
	release, err = c.cfg.Gate(ctx, p.name, tenant, p.MaxConcurrency)
	return release, time.Since(start), err
}

// route returns the providers a request may use, in order: names (a
// tenant's list) or, when empty, every provider.
func (c *Client) route(names []string) ([]*provider, error) {
	if len(names) == 0 {
		return c.providers, nil
	}
	out := make([]*provider, 0, len(names))
	for _, n := range names {
		p, err := c.provider(n)
		if err != nil || n == "" {
			return nil, konstruct.Errorf(konstruct.EINVALID, "No language model provider is named %q (configured: %s).", n, strings.Join(c.Providers(), ", "))
		}
		out = append(out, p)
	}
	return out, nil
}

// transient reports whether a failed attempt may succeed elsewhere: no
// HTTP error status (a connection error, a timeout, a broken or empty
// stream), 408, 429 or a 5xx.
func transient(att Attempt) bool {
	return att.Status == 0 || att.Status == http.StatusRequestTimeout || retryable(att.Status)
}

func (c *Client) anyListsModels() bool {
	for _, p := range c.providers {
		if len(p.Models) > 0 {
			return true
		}
	}
	return false
}

// usage fills token counts from the server's usage, else from estimates.
func (c *Client) usage(res *Result, req Request, st *streamState) {
	if st.promptTokens > 0 || st.completionTokens > 0 {
		res.PromptTokens, res.CompletionTokens, res.UsageEstimated = st.promptTokens, st.completionTokens, false
		return
	}
	res.PromptTokens = EstimateMessagesTokens(req.Messages)
	res.CompletionTokens = EstimateTokens(res.Text)
	res.UsageEstimated = true
}

func (c *Client) report(att Attempt) {
	if c.cfg.OnAttempt != nil {
		c.cfg.OnAttempt(att)
	}
	if att.Err != nil && !errors.Is(att.Err, errAborted) {
		// The SDK's API errors print the status only, never headers (so never
		// the key); connection errors print the request URL.
		c.cfg.Logger.Warn("llm attempt failed", "provider", att.Provider, "model", att.Model,
			"status", att.Status, "err", att.Err, "ttft", att.TTFT, "latency", att.Latency)
	}
}

type streamState struct {
	text             strings.Builder
	delivered        bool
	firstAt          time.Time
	promptTokens     int
	completionTokens int
	finishReason     string
	callbackErr      error
}

// attempt runs one streamed request against one provider. The first-token
// and idle timers cancel the attempt's context, which unblocks the body read
// inside the SDK's stream; the deferred Close releases the body in every case.
func (c *Client) attempt(ctx context.Context, p *provider, params openai.ChatCompletionNewParams, onDelta func(string) error, st *streamState) (att Attempt) {
	start := time.Now()
	att = Attempt{Provider: p.name, Model: params.Model}
	defer func() { att.Latency = time.Since(start) }()

	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	first := time.AfterFunc(c.cfg.Timeouts.FirstToken, func() { cancel(ErrFirstTokenTimeout) })
	defer first.Stop()
	// The idle timer starts at the first token: before it, a long prompt's
	// prefill or a model load is the first-token timer's business.
	var idle *time.Timer
	defer func() {
		if idle != nil {
			idle.Stop()
		}
	}()

	stream := p.chat.NewStreaming(actx, params)
	defer stream.Close()
read:
	for stream.Next() {
		chunk := stream.Current()
		if idle != nil {
			idle.Reset(c.cfg.Timeouts.Idle)
		}
		if u := chunk.Usage; u.PromptTokens > 0 || u.CompletionTokens > 0 {
			st.promptTokens, st.completionTokens = int(u.PromptTokens), int(u.CompletionTokens)
		}
		for _, ch := range chunk.Choices {
			if ch.Index != 0 {
				continue
			}
			if ch.FinishReason != "" {
				st.finishReason = ch.FinishReason
			}
			d := ch.Delta.Content
			if d == "" {
				// A reasoning model thinking aloud (reasoning_content in vLLM
				// and LiteLLM, reasoning in Ollama) shows the server is alive:
				// from then on the idle timer, not the first-token timer,
				// watches it. Nothing was shown yet, so fallback stays possible.
				if idle == nil && hasReasoning(ch.Delta.JSON.ExtraFields) {
					first.Stop()
					idle = time.AfterFunc(c.cfg.Timeouts.Idle, func() { cancel(ErrIdleTimeout) })
				}
				continue
			}
			if !st.delivered {
				first.Stop()
				st.delivered = true
				st.firstAt = time.Now()
				att.TTFT = st.firstAt.Sub(start)
				if idle == nil {
					idle = time.AfterFunc(c.cfg.Timeouts.Idle, func() { cancel(ErrIdleTimeout) })
				}
			}
			st.text.WriteString(d)
			if err := onDelta(d); err != nil {
				st.callbackErr = err
				cancel(errAborted)
				att.Err = errAborted
				break read
			}
		}
	}
	if st.callbackErr != nil {
		return att
	}
	err := stream.Err()
	if err == nil && !st.delivered {
		err = ErrEmptyAnswer
	}
	if err != nil {
		// A timer or the total deadline explains a cancelled read better than
		// the transport's "context canceled".
		if cause := context.Cause(actx); cause != nil && !errors.Is(err, ErrEmptyAnswer) {
			err = fmt.Errorf("%w (%v)", cause, err) //nolint:errorlint // only the cause is meant to match errors.Is; the transport error is text
		}
		var apiErr *openai.Error
		if errors.As(err, &apiErr) {
			att.Status = apiErr.StatusCode
			err = &statusError{status: apiErr.StatusCode, retryAfter: retryAfter(apiErr.Response), err: err}
		}
	}
	if err == nil && st.finishReason == "" {
		c.cfg.Logger.Debug("llm stream ended without a finish reason", "provider", p.name, "model", params.Model)
	}
	att.Err = err
	return att
}

// hasReasoning reports a non-empty reasoning delta among a delta's fields
// unknown to the SDK.
func hasReasoning(extra map[string]respjson.Field) bool {
	for _, k := range []string{"reasoning_content", "reasoning"} {
		if f, ok := extra[k]; ok {
			if raw := f.Raw(); raw != "" && raw != "null" && raw != `""` {
				return true
			}
		}
	}
	return false
}

// statusError keeps the Retry-After of an HTTP error for the retry logic.
type statusError struct {
	status     int
	retryAfter time.Duration
	err        error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

func retryable(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}

// retryWait returns the wait before retry number try+1, and false when the
// server asked for longer than MaxRetryWait (then the next provider is better).
func (c *Client) retryWait(try int, err error) (time.Duration, bool) {
	var se *statusError
	if errors.As(err, &se) && se.retryAfter > 0 {
		if se.retryAfter > c.cfg.MaxRetryWait {
			return 0, false
		}
		return se.retryAfter, true
	}
	d := 500 * time.Millisecond << min(try, 10)
	d = min(d, c.cfg.MaxRetryWait)
	// Jitter (±20%) keeps many workers from retrying in lockstep.
	if d > 0 {
		d += time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	}
	return d, true
}

// retryAfter reads retry-after-ms or Retry-After (seconds or an HTTP date).
func retryAfter(res *http.Response) time.Duration {
	if res == nil {
		return 0
	}
	if v := res.Header.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := res.Header.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// contextError is the error for a call whose context ended before any text.
func contextError(ctx context.Context) error {
	cause := context.Cause(ctx)
	if errors.Is(cause, ErrTotalTimeout) || errors.Is(cause, context.DeadlineExceeded) {
		return &konstruct.Error{Code: konstruct.ETIMEOUT, Message: "The language model took too long to answer.", Err: cause}
	}
	return &konstruct.Error{Code: konstruct.EUNAVAILABLE, Message: "The request to the language model was cancelled.", Err: cause}
}

// finalError classifies the last attempt once every provider failed.
func finalError(last Attempt, n int) error {
	if last.Err == nil { // no provider could serve the model
		return konstruct.Errorf(konstruct.EINVALID, "No language model provider serves the requested model.")
	}
	on := last.Provider
	if last.Model != "" {
		on += " with model " + last.Model
	}
	cause := fmt.Errorf("%d attempt(s) failed, last on %s: %w", n, on, last.Err)
	e := &konstruct.Error{Code: konstruct.EUNAVAILABLE, Message: "I couldn't reach the language model.", Err: cause}
	switch s := last.Status; {
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		e.Code, e.Message = konstruct.EUNAUTHORIZED, fmt.Sprintf("Language model provider %q refused our credentials (HTTP %d).", last.Provider, s)
	case s == http.StatusTooManyRequests:
		e.Code, e.Message = konstruct.ERATELIMIT, "The language model is busy right now."
	case s == http.StatusNotFound:
		e.Code, e.Message = konstruct.EINVALID, fmt.Sprintf("Language model provider %q does not know the model %q or the endpoint (HTTP 404).", last.Provider, last.Model)
	case s >= 400 && s < 500:
		e.Code, e.Message = konstruct.EINVALID, fmt.Sprintf("Language model provider %q rejected the request (HTTP %d).", last.Provider, s)
	case errors.Is(last.Err, ErrFirstTokenTimeout), errors.Is(last.Err, ErrIdleTimeout), errors.Is(last.Err, ErrTotalTimeout):
		e.Code, e.Message = konstruct.ETIMEOUT, "The language model took too long to answer."
	}
	return e
}

// params converts a Request; Model is set per provider.
func (c *Client) params(req Request) (openai.ChatCompletionNewParams, error) {
	var p openai.ChatCompletionNewParams
	if len(req.Messages) == 0 {
		return p, konstruct.Errorf(konstruct.EINVALID, "There is nothing to send to the language model.")
	}
	for _, m := range req.Messages {
		name := sanitizeName(m.Name)
		var u openai.ChatCompletionMessageParamUnion
		switch m.Role {
		case "system":
			u = openai.SystemMessage(m.Content)
			if name != "" {
				u.OfSystem.Name = openai.String(name)
			}
		case "user":
			u = openai.UserMessage(m.Content)
			if name != "" {
				u.OfUser.Name = openai.String(name)
			}
		case "assistant":
			u = openai.AssistantMessage(m.Content)
			if name != "" {
				u.OfAssistant.Name = openai.String(name)
			}
		default:
			return p, konstruct.Errorf(konstruct.EINVALID, "Unknown chat role %q.", m.Role)
		}
		p.Messages = append(p.Messages, u)
	}
	// Servers that do not know stream_options ignore it; those that do send a
	// final usage chunk.
	p.StreamOptions.IncludeUsage = openai.Bool(true)
	if req.MaxTokens > 0 {
		// max_tokens rather than max_completion_tokens: every OpenAI-compatible
		// server (Ollama, vLLM, llama.cpp, LiteLLM) understands it.
		p.MaxTokens = openai.Int(int64(req.MaxTokens))
	}
	if req.Temperature != nil {
		p.Temperature = openai.Float(*req.Temperature)
	}
	return p, nil
}

var nameInvalid = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// sanitizeName fits a speaker name to the API's ^[A-Za-z0-9_-]{1,64}$: OpenAI
// rejects a request whose name has a space, which Slack display names often do.
func sanitizeName(s string) string {
	s = strings.Trim(nameInvalid.ReplaceAllString(s, "_"), "_")
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

func (c *Client) provider(name string) (*provider, error) {
	if name == "" {
		return c.providers[0], nil
	}
	for _, p := range c.providers {
		if p.name == name {
			return p, nil
		}
	}
	return nil, konstruct.Errorf(konstruct.ENOTFOUND, "No language model provider is named %q.", name)
}

// ListModels lists the models a provider serves ("" is the first provider),
// for `konstruct doctor`. It is bounded by the first-token timeout.
func (c *Client) ListModels(ctx context.Context, providerName string) ([]string, error) {
	p, err := c.provider(providerName)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.Timeouts.FirstToken, ErrFirstTokenTimeout)
	defer cancel()
	page, err := p.models.List(ctx)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = fmt.Errorf("%w (%v)", cause, err) //nolint:errorlint // as in attempt: the cause decides, the rest is text
		}
		att := Attempt{Provider: p.name, Err: err}
		var apiErr *openai.Error
		if errors.As(err, &apiErr) {
			att.Status = apiErr.StatusCode
		}
		return nil, finalError(att, 1)
	}
	out := make([]string, 0, len(page.Data))
	for _, m := range page.Data {
		out = append(out, m.ID)
	}
	return out, nil
}

// Probe asks a provider ("" is the first) for a one-token completion, for
// `konstruct doctor`, and returns the model it used: the default model as the
// provider maps it, else the first model the provider lists. No retries, no
// fallback; an empty completion counts as success.
func (c *Client) Probe(ctx context.Context, providerName string) (string, error) {
	p, err := c.provider(providerName)
	if err != nil {
		return "", err
	}
	model := p.modelFor(c.cfg.DefaultModel)
	if model == "" {
		models, err := c.ListModels(ctx, p.name)
		if err != nil {
			return "", err
		}
		if len(models) == 0 {
			return "", konstruct.Errorf(konstruct.EINVALID, "Provider %q lists no model to probe.", p.name)
		}
		model = models[0]
	}
	params, err := c.params(Request{MaxTokens: 1, Messages: []Message{{Role: "user", Content: "Reply with one word: ready"}}})
	if err != nil {
		return "", err
	}
	params.Model = model
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.Timeouts.Total, ErrTotalTimeout)
	defer cancel()
	att := c.attempt(ctx, p, params, func(string) error { return nil }, &streamState{})
	c.report(att)
	if att.Err != nil && !errors.Is(att.Err, ErrEmptyAnswer) {
		return model, finalError(att, 1)
	}
	return model, nil
}
