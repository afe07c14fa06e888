package tracing

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/konstruct/konstruct"
)

func TestTraceParentRoundTrip(t *testing.T) {
	t.Parallel()
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	tp := Inject(ctx)
	if tp != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Fatalf("Inject = %q", tp)
	}
	got := trace.SpanContextFromContext(Extract(context.Background(), tp))
	if got.TraceID() != tid || got.SpanID() != sid || !got.IsSampled() || !got.IsRemote() {
		t.Fatalf("Extract = %+v", got)
	}
	if Inject(context.Background()) != "" {
		t.Error("Inject without a span should be empty")
	}
	for _, bad := range []string{"", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"} {
		if sc := trace.SpanContextFromContext(Extract(context.Background(), bad)); sc.IsValid() {
			t.Errorf("Extract(%q) is valid", bad)
		}
	}
}

func TestContinueWithoutTracerOrParent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	if c, span := Continue(ctx, nil, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "x"); span != nil || c != ctx {
		t.Error("no tracer: no span, ctx unchanged")
	}
	tr := noop.NewTracerProvider().Tracer("t") // a tracer that is not nil
	if c, span := Continue(ctx, tr, "", "x"); span != nil || c != ctx {
		t.Error("no traceparent: no span (the gateway did not trace the message)")
	}
	if _, span := Continue(ctx, tr, "bogus", "x"); span != nil {
		t.Error("invalid traceparent: no span")
	}
	End(nil, errors.New("x")) // tracing off: nothing to do, no panic
}

func TestErrorType(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{fmt.Errorf("edit: %w", konstruct.Errorf(konstruct.ENOTFOUND, "gone")), konstruct.ENOTFOUND},
		{&konstruct.Error{Code: konstruct.EINVALID, Err: &konstruct.SlackError{Method: "chat.update", Code: "msg_too_long"}}, "msg_too_long"},
		{&konstruct.Error{Code: konstruct.ERATELIMIT, Err: &konstruct.SlackError{Method: "chat.update", RetryAfter: time.Second}}, konstruct.ERATELIMIT},
		{fmt.Errorf("x: %w", context.Canceled), "canceled"},
		{context.DeadlineExceeded, konstruct.ETIMEOUT},
		{errors.New("the user's question"), konstruct.EINTERNAL},
	} {
		if got := ErrorType(tc.err); got != tc.want {
			t.Errorf("ErrorType(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestConfigURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"http://127.0.0.1:4318":         "http://127.0.0.1:4318/v1/traces",
		"http://127.0.0.1:4318/":        "http://127.0.0.1:4318/v1/traces",
		"https://tempo.example/otlp/v1": "https://tempo.example/otlp/v1",
	} {
		if got := (Config{Endpoint: in}).TracesURL(); got != want {
			t.Errorf("TracesURL(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestOffAllocatesNothing: with tracing off (a nil tracer) the helpers on
// the message path cost no allocation. Not parallel: AllocsPerRun counts
// the whole process's.
func TestOffAllocatesNothing(t *testing.T) {
	ctx := context.Background()
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	n := testing.AllocsPerRun(200, func() {
		c, span := Continue(ctx, nil, tp, "route")
		End(span, nil)
		_ = c
	})
	if n != 0 {
		t.Errorf("tracing off: %v allocations per message, want 0", n)
	}
}
