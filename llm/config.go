package llm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/konstruct/konstruct"
)

// Default timeouts and retry settings, used where Config leaves a zero value.
const (
	DefaultFirstTokenTimeout = 60 * time.Second
	DefaultIdleTimeout       = 30 * time.Second
	DefaultTotalTimeout      = 5 * time.Minute
	DefaultMaxRetries        = 1
	DefaultMaxRetryWait      = 5 * time.Second
)

// Provider is one OpenAI-compatible endpoint.
type Provider struct {
	// Name identifies the provider in logs, metrics and Result; empty means
	// the host of BaseURL.
	Name string
	// BaseURL is the API root, like "http://127.0.0.1:11434/v1/".
	BaseURL string
	// APIKey is sent as a bearer token; empty sends no Authorization header
	// (Ollama, llama.cpp). It is never logged.
	APIKey string
	// Models this provider serves. Empty means any model: the requested one is
	// sent as is. Otherwise a requested model not listed is replaced by the
	// first listed one.
	Models []string
	// MaxConcurrency bounds the requests this provider serves at once,
	// across every process of the install (through Config.Gate); 0 sets no
	// bound.
	MaxConcurrency int
}

// modelFor returns the model to ask this provider for.
func (p Provider) modelFor(requested string) string {
	if len(p.Models) == 0 {
		return requested
	}
	for _, m := range p.Models {
		if m == requested {
			return m
		}
	}
	return p.Models[0]
}

// Timeouts bound one Stream call. Zero values take the defaults.
type Timeouts struct {
	// FirstToken runs from the start of an attempt to its first non-empty
	// text delta. When it fires the next provider is tried.
	FirstToken time.Duration
	// Idle runs between two chunks of a stream.
	Idle time.Duration
	// Total bounds the whole call, every attempt and retry wait included.
	Total time.Duration
}

// Config configures a Client.
type Config struct {
	// Providers in fallback order; at least one.
	Providers []Provider
	// DefaultModel is used when a Request names none.
	DefaultModel string
	Timeouts     Timeouts
	// MaxRetries is how often one provider is retried on 429 or 5xx before its
	// first token, before moving to the next provider. 0 means
	// DefaultMaxRetries; a negative value means no retries.
	MaxRetries int
	// MaxRetryWait caps the wait before a retry (default 5s). A Retry-After
	// asking for longer than this skips the remaining retries on that provider
	// and moves on, since waiting less than asked would only be refused again.
	MaxRetryWait time.Duration
	// HTTPClient, when nil, is a client of our own whose idle connections
	// Close releases. It must not set a Timeout: that would cut long streams.
	HTTPClient *http.Client
	Logger     *slog.Logger
	// OnAttempt, when set, is called after every attempt (for metrics). It
	// runs on the caller's goroutine and must not block.
	OnAttempt func(Attempt)
	// Gate, when set, is asked for one of a provider's slots before each
	// attempt on a provider with MaxConcurrency (queue.AcquireLLM: shared
	// by every process, fair between tenants); the wait shows in
	// Attempt.SlotWait. The first token's timeout starts once the slot is
	// held.
	Gate func(ctx context.Context, provider, tenant string, slots int) (release func(), err error)
}

// Validate reports every problem with c, as *konstruct.FieldError values
// named like the llm.* settings ("providers[1].base_url", "timeouts.idle").
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &konstruct.FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if len(c.Providers) == 0 {
		bad("providers", "must name at least one provider")
	}
	names := map[string]bool{}
	for i, p := range c.Providers {
		field := fmt.Sprintf("providers[%d]", i)
		u, err := url.Parse(p.BaseURL)
		switch {
		case p.BaseURL == "":
			bad(field+".base_url", "is required")
		case err != nil || (u.Scheme != "http" && u.Scheme != "https"):
			bad(field+".base_url", "must be a http:// URL, got %q", redactURL(p.BaseURL))
		case u.Host == "":
			bad(field+".base_url", "must name a host, got %q", redactURL(p.BaseURL))
		}
		name := providerName(p)
		if names[name] {
			bad(field+".name", "%q is used twice", name)
		}
		names[name] = true
		for _, m := range p.Models {
			if m == "" {
				bad(field+".models", "lists an empty model name")
			}
		}
		if p.MaxConcurrency < 0 {
			bad(field+".max_concurrency", "must not be negative (0 = no bound)")
		}
	}
	for field, d := range map[string]time.Duration{"timeouts.first_token": c.Timeouts.FirstToken, "timeouts.idle": c.Timeouts.Idle, "timeouts.total": c.Timeouts.Total} {
		if d < 0 {
			bad(field, "must be a positive duration such as 30s")
		}
	}
	if c.MaxRetryWait < 0 {
		bad("max_retry_wait", "must not be negative")
	}
	if c.HTTPClient != nil && c.HTTPClient.Timeout != 0 {
		bad("http_client", "must not set Timeout (it would cut long streams); use Timeouts")
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

func providerName(p Provider) string {
	if p.Name != "" {
		return p.Name
	}
	if u, err := url.Parse(p.BaseURL); err == nil && u.Host != "" {
		return u.Host
	}
	return p.BaseURL
}

// redactURL drops any user:password from a URL before it is printed.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// withDefaults fills zero values.
func (c Config) withDefaults() Config {
	if c.Timeouts.FirstToken == 0 {
		c.Timeouts.FirstToken = DefaultFirstTokenTimeout
	}
	if c.Timeouts.Idle == 0 {
		c.Timeouts.Idle = DefaultIdleTimeout
	}
	if c.Timeouts.Total == 0 {
		c.Timeouts.Total = DefaultTotalTimeout
	}
	switch {
	case c.MaxRetries == 0:
		c.MaxRetries = DefaultMaxRetries
	case c.MaxRetries < 0:
		c.MaxRetries = 0
	}
	if c.MaxRetryWait == 0 {
		c.MaxRetryWait = DefaultMaxRetryWait
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
