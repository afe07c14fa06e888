package worker

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/llm/llmfake"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/slacksim"
)

// A reply the janitor takes over after its process died continues the
// message's trace from the job recorded in its state: the dead delivery's
// span and the takeover (with the delivery it runs) share the trace id the
// router handed over, and no span carries the question or the answer.
func TestJanitorTakeoverContinuesTheTrace(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	e := newEnv(t, withQueue(func(c *queue.Config) { c.OrphanAfter = time.Minute }),
		withConfig(func(c *Config) { c.OrphanGrace = time.Minute; c.Tracer = tp.Tracer("worker") }))
	var calls atomic.Int32
	e.fakes[0].SetHandler(func(llmfake.ChatRequest) llmfake.Reply {
		if calls.Add(1) == 1 {
			return llmfake.Reply{Text: "never finishes", HangAfter: 1}
		}
		return llmfake.Reply{Text: "Answered after all."}
	})
	job := e.mention("the confidential question", "")
	const traceID, routeSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	job.Message.TraceParent = fmt.Sprintf("00-%s-%s-01", traceID, routeSpan) // the router's span

	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { done <- e.w.Handle(ctx, job, firstTry) }()
	if _, err := e.sim.WaitThread(deadline(t, 10*time.Second), job.Message.TeamID, job.Message.ChannelID, job.Message.TS, func(v slacksim.ThreadView) bool {
		for _, m := range v.Messages {
			if m.TS == job.PlaceholderTS && m.Updates > 0 {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	cancel() // the process "crashes"
	<-done
	e.clock.advance(2 * time.Minute)
	if n, err := e.w.Sweep(ctxT(t)); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	if answers := e.answers(job); len(answers) != 1 || markdownOf(t, answers[0]) != "Answered after all." {
		t.Fatalf("answers %+v", answers)
	}

	spans := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		spans[s.Name()] = append(spans[s.Name()], s)
		if s.SpanContext().TraceID().String() != traceID {
			t.Errorf("span %s in trace %s, want %s", s.Name(), s.SpanContext().TraceID(), traceID)
		}
		for _, a := range s.Attributes() {
			if v := a.Value.Emit(); strings.Contains(v, "confidential") || strings.Contains(v, "Answered") {
				t.Errorf("span %s carries %s=%q", s.Name(), a.Key, v)
			}
		}
	}
	if len(spans["reply"]) != 2 || len(spans["janitor.takeover"]) != 1 || len(spans["llm.generate"]) != 2 {
		t.Fatalf("spans: reply %d, janitor.takeover %d, llm.generate %d; want 2, 1, 2",
			len(spans["reply"]), len(spans["janitor.takeover"]), len(spans["llm.generate"]))
	}
	takeover := spans["janitor.takeover"][0]
	if takeover.Parent().SpanID().String() != routeSpan {
		t.Errorf("janitor.takeover's parent %s, want the route's %s", takeover.Parent().SpanID(), routeSpan)
	}
	var crashed, resumed sdktrace.ReadOnlySpan
	for _, s := range spans["reply"] {
		switch s.Parent().SpanID() {
		case takeover.SpanContext().SpanID():
			resumed = s
		default:
			crashed = s
		}
	}
	if resumed == nil || crashed == nil || crashed.Parent().SpanID().String() != routeSpan {
		t.Fatalf("reply spans: the dead delivery under the route, the resumed one under the takeover; got %v, %v", parentOf(crashed), parentOf(resumed))
	}
	if got := attr(resumed, "reply.outcome"); got != konstruct.OutcomeAnswered {
		t.Errorf("resumed reply's outcome %q", got)
	}
	if crashed.Status().Code.String() != "Error" || attr(crashed, "reply.handed_back") != "true" {
		t.Errorf("the dead delivery: status %v, handed_back %q", crashed.Status(), attr(crashed, "reply.handed_back"))
	}
}

func parentOf(s sdktrace.ReadOnlySpan) trace.SpanID {
	if s == nil {
		return trace.SpanID{}
	}
	return s.Parent().SpanID()
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, a := range s.Attributes() {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}
