// Package tracing is Konstruct's small glue to OpenTelemetry's tracing API:
// the tracing.* settings, the W3C traceparent a message carries from the
// gateway to the router and the worker (konstruct.Message.TraceParent), and
// how a failure is put on a span. It imports the API only; the SDK and the
// OTLP/HTTP exporter are set up by internal/tracing/otlp, in cmd/konstruct.
//
// One trace per message: the gateway starts it ("slack.envelope") for the
// messages it records — never for the chatter it acks without a record —
// and writes its traceparent into the record; the router continues it
// ("route") and hands its own traceparent to the reply job; the worker
// continues it ("reply", "llm.generate", "slack.chat.*"), and so does the
// janitor when it takes a reply over from the job recorded in its state.
//
// Tracing off (no endpoint, the default) is a nil trace.Tracer in every
// package's Config: the code paths test for it, so that nothing is
// allocated for tracing on the hot path.
//
// What a span may carry: ids (team, channel, event type, envelope type),
// outcomes, counts, durations, error codes. Never a message's text, a
// model's answer, a token, or an error's free text (which may quote any of
// them): an error is its code (konstruct's or Slack's); the logs have the
// whole line.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/konstruct/konstruct"
)

// Config is tracing.*: where spans go, and how many.
type Config struct {
	// Endpoint is the OTLP/HTTP endpoint (http://127.0.0.1:4318): a URL
	// without a path gets the standard /v1/traces. "" turns tracing off.
	Endpoint string
	// SampleRatio is the share of messages traced, 0 to 1 (default 1),
	// decided once per message at the gateway (ParentBased(TraceIDRatioBased)).
	SampleRatio float64
	// Headers are sent with every export (an authorization to a hosted
	// collector): secrets, never logged nor printed.
	Headers map[string]string
}

// Enabled reports whether spans are exported at all.
func (c Config) Enabled() bool { return c.Endpoint != "" }

// Validate reports every problem with c, as *konstruct.FieldError values
// (fields otlp_endpoint, sample_ratio, headers).
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &konstruct.FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		switch {
		case err != nil:
			bad("otlp_endpoint", "is not a valid URL: give the collector's OTLP/HTTP address, e.g. http://127.0.0.1:4318")
		case u.Scheme != "http" && u.Scheme != "https":
			bad("otlp_endpoint", "must be an http:// or https:// URL (OTLP/HTTP, e.g. http://127.0.0.1:4318; gRPC is not supported), got %q", konstruct.Redact(redactURL(u)))
		case u.Host == "":
			bad("otlp_endpoint", "must name a host, e.g. http://127.0.0.1:4318, got %q", konstruct.Redact(redactURL(u)))
		case u.User != nil:
			bad("otlp_endpoint", "must not carry credentials: put them in tracing.headers")
		}
	}
	if !(c.SampleRatio >= 0 && c.SampleRatio <= 1) { // NaN too
		bad("sample_ratio", "must be between 0 and 1 (the share of messages traced), got %v", c.SampleRatio)
	}
	for _, k := range slices.Sorted(maps.Keys(c.Headers)) {
		if k == "" || strings.ContainsAny(k, " \t\r\n:") {
			bad("headers", "has an invalid header name %q", k)
		}
		if strings.ContainsAny(c.Headers[k], "\r\n") {
			bad("headers", "value of %s holds a line break", k)
		}
	}
	return errors.Join(errs...)
}

// TracesURL is the URL spans are posted to: Endpoint, with /v1/traces when
// it has no path (as OTEL_EXPORTER_OTLP_ENDPOINT is read).
func (c Config) TracesURL() string {
	u, err := url.Parse(c.Endpoint)
	if err != nil {
		return c.Endpoint
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	return u.String()
}

// redactURL is u without its user info, query or fragment.
func redactURL(u *url.URL) string {
	v := *u
	v.User, v.RawQuery, v.Fragment = nil, "", ""
	return v.String()
}

// Describe says where spans go, for logs and doctor: the URL (without
// query), the ratio and the header names; never the header values.
func (c Config) Describe() string {
	if !c.Enabled() {
		return "off"
	}
	s := c.TracesURL()
	if u, err := url.Parse(s); err == nil {
		s = redactURL(u)
	}
	s = fmt.Sprintf("OTLP/HTTP to %s, sample ratio %v", s, c.SampleRatio)
	if len(c.Headers) > 0 {
		s += fmt.Sprintf(", headers %s (values hidden)", strings.Join(slices.Sorted(maps.Keys(c.Headers)), ", "))
	}
	return s
}

// propagator reads and writes W3C traceparent.
var propagator = propagation.TraceContext{}

// Inject returns the W3C traceparent of ctx's span, "" when ctx has none.
func Inject(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return c["traceparent"]
}

// Extract returns ctx carrying traceparent as the remote parent of the
// spans started from it; ctx as it is when traceparent is "" or invalid.
func Extract(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}

// Continue starts a span under the trace of traceparent (or under ctx's
// own span, when it has one: a takeover's reply under the takeover). With
// no tracer, or nothing to continue, it returns ctx and a nil span: a
// message the gateway did not trace is not traced further.
func Continue(ctx context.Context, t trace.Tracer, traceparent, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if t == nil {
		return ctx, nil
	}
	if !trace.SpanContextFromContext(ctx).IsValid() {
		if traceparent == "" {
			return ctx, nil
		}
		ctx = Extract(ctx, traceparent)
		if !trace.SpanContextFromContext(ctx).IsValid() {
			return ctx, nil
		}
	}
	return t.Start(ctx, name, opts...)
}

// End ends span (nil: tracing off), marking it failed when err is set.
func End(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		Fail(span, err)
	}
	span.End()
}

// Fail marks span failed: status Error, described by err's code alone
// (konstruct's, or Slack's for a Web API call), and an "exception" event
// with that code. The error's text is left out: it may quote content.
func Fail(span trace.Span, err error) {
	code := ErrorType(err)
	span.SetAttributes(attribute.String("error.type", code))
	span.AddEvent("exception", trace.WithAttributes(attribute.String("exception.type", code)))
	span.SetStatus(codes.Error, code)
}

// ErrorType is err's code for a span: Slack's error code, "canceled" or
// "timeout" for a context, else konstruct's code.
func ErrorType(err error) string {
	switch {
	case err == nil:
		return ""
	case konstruct.SlackCode(err) != "":
		return konstruct.SlackCode(err)
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return konstruct.ETIMEOUT
	}
	if _, limited := konstruct.RetryAfter(err); limited {
		return konstruct.ERATELIMIT
	}
	return konstruct.ErrorCode(err)
}
