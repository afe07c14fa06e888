package worker

import (
	"cmp"
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/tracing"
	"github.com/konstruct/konstruct/llm"
)

// The worker's spans (Config.Tracer set): "reply" for a delivery of a job,
// under the router's "route" (the job's traceparent); "llm.generate" for
// its request to the model; "janitor.takeover" for a reply taken over from
// a process that died, under the same route, with the delivery it runs
// beneath. Ids, stages, outcomes, counts and durations only: never the
// question, the history or the answer.

// startReply continues the job's trace with the delivery's span.
func (w *Server) startReply(ctx context.Context, job *konstruct.ReplyJob, d konstruct.Delivery) (context.Context, trace.Span) {
	m := &job.Message
	return tracing.Continue(ctx, w.cfg.Tracer, m.TraceParent, "reply",
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("konstruct.tenant_id", m.TenantID),
			attribute.String("slack.team_id", m.TeamID),
			attribute.Int("reply.delivery", d.Retry),
			attribute.Bool("reply.has_placeholder", job.PlaceholderTS != ""),
		))
}

// endReply ends a delivery's span: a delivery another one holds is no
// failure, nor is an answer (its outcome is on the span, traceOutcome).
func endReply(span trace.Span, err error) {
	if after, deferred := konstruct.Deferred(err); deferred {
		span.AddEvent("reply.deferred", trace.WithAttributes(attribute.Int64("retry_in_ms", after.Milliseconds())))
		err = nil
	} else if err != nil && !errors.Is(err, konstruct.ErrNoRetry) {
		span.SetAttributes(attribute.Bool("reply.handed_back", true))
	}
	tracing.End(span, err)
}

// traceOutcome puts the reply's outcome on the span of ctx (the delivery's,
// or the takeover's).
func traceOutcome(ctx context.Context, outcome, errorCode string) {
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(attribute.String("reply.outcome", outcome))
	if errorCode != "" {
		span.SetAttributes(attribute.String("reply.error_code", errorCode))
	}
}

// endLLM ends the model request's span with what the model did: the
// provider and model that answered (after any fallback), time to first
// token, tokens, and each attempt as an event.
func endLLM(span trace.Span, model string, res llm.Result, err, cause error) {
	if model != "" { // else the install's llm.model
		span.SetAttributes(attribute.String("gen_ai.request.model", model))
	}
	span.SetAttributes(
		attribute.String("gen_ai.response.model", cmp.Or(res.Model, model)),
		attribute.String("llm.provider", res.Provider),
		attribute.Int64("llm.ttft_ms", res.TimeToFirstToken.Milliseconds()),
		attribute.Int64("llm.latency_ms", res.Latency.Milliseconds()),
		attribute.Int("gen_ai.usage.input_tokens", res.PromptTokens),
		attribute.Int("gen_ai.usage.output_tokens", res.CompletionTokens),
		attribute.Bool("llm.usage_estimated", res.UsageEstimated),
	)
	for _, at := range res.Attempts {
		attrs := []attribute.KeyValue{
			attribute.String("llm.provider", at.Provider),
			attribute.String("gen_ai.request.model", at.Model),
			attribute.Int64("llm.ttft_ms", at.TTFT.Milliseconds()),
			attribute.Int64("llm.latency_ms", at.Latency.Milliseconds()),
			attribute.Int64("llm.slot_wait_ms", at.SlotWait.Milliseconds()),
		}
		if at.Status != 0 {
			attrs = append(attrs, attribute.Int("http.response.status_code", at.Status))
		}
		if at.Err != nil {
			attrs = append(attrs, attribute.String("error.type", tracing.ErrorType(at.Err)))
		}
		span.AddEvent("llm.attempt", trace.WithAttributes(attrs...))
	}
	switch {
	case errors.Is(cause, errStopped):
		span.SetAttributes(attribute.Bool("llm.stopped", true)) // the asker pressed Stop
		err = nil
	case errors.Is(err, errTooLong):
		span.SetAttributes(attribute.Bool("llm.cut_at_cap", true))
		err = nil
	}
	tracing.End(span, err)
}

// startTakeover continues the trace of a reply the janitor takes over,
// from the job recorded in its state.
func (w *Server) startTakeover(ctx context.Context, st konstruct.ReplyState) (context.Context, trace.Span) {
	return tracing.Continue(ctx, w.cfg.Tracer, st.Job.Message.TraceParent, "janitor.takeover",
		trace.WithAttributes(
			attribute.String("konstruct.tenant_id", st.Post.TenantID),
			attribute.String("slack.team_id", st.Post.TeamID),
			attribute.String("reply.stage", string(st.Stage)),
		))
}
