package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/bot"
	"github.com/konstruct/konstruct/config"
	"github.com/konstruct/konstruct/internal/tracing"
	"github.com/konstruct/konstruct/internal/tracing/otlp"
	"github.com/konstruct/konstruct/router"
	"github.com/konstruct/konstruct/worker"
)

// Traces (tracing.otlp_endpoint set): the provider is set up here, each
// package gets a tracer in its Config, and the Slack the router and the
// workers write with is wrapped so that every Web API call is a span.
// Tracing off: nil tracers, the bare *bot.Web, no exporter, no connection.

// traces is the daemon's tracing: the provider (nil: off) and the Slack
// the router and the workers write with.
type traces struct {
	tracing *otlp.Provider
	slack   slackAPI
}

// slackAPI is the Slack of the router and the workers (*bot.Web, or
// tracedSlack around it).
type slackAPI interface {
	router.Slack
	worker.Slack
}

// startTracing sets up the tracer provider from tracing.* (nil when off)
// and the Slack the router and workers use.
func (d *daemonT) startTracing() error {
	d.slack = d.web
	p, err := otlp.New(d.cfg.TracingConfig(), otlp.Options{Role: d.roles.String(), Version: version})
	if err != nil || p == nil {
		return err
	}
	d.tracing = p
	d.slack = tracedSlack{Web: d.web, t: p.Tracer("github.com/konstruct/konstruct/bot")}
	d.logger.Info("traces exported", "tracing", d.cfg.TracingConfig().Describe())
	return nil
}

// tracer is the tracer of one package, nil with tracing off.
func (d *daemonT) tracer(pkg string) trace.Tracer {
	return d.tracing.Tracer("github.com/konstruct/konstruct/" + pkg)
}

// stopTracing exports the spans still batched, within ctx (the stop's last
// 2 s, shared with the HTTP server's shutdown), and closes the exporter.
// The returned channel is closed when done.
func (d *daemonT) stopTracing(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := d.tracing.Shutdown(ctx); err != nil {
			d.logger.Warn("traces not all exported at the stop", "error", err)
		}
	}()
	return done
}

// closeTracing stops the provider when Run did not (newDaemon failed).
func (d *daemonT) closeTracing() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = d.tracing.Shutdown(ctx)
}

// tracedSlack makes each Slack Web API call of a traced message a span
// named after its method ("slack.chat.update"), under the span of ctx: the
// method, the team and channel ids, and on failure Slack's error code; a
// 429 is an event with Slack's Retry-After. Never the content.
type tracedSlack struct {
	*bot.Web
	t trace.Tracer
}

// call starts the span of a call when ctx is in a trace: Slack calls
// outside one (a reconcile) are not traced.
func (s tracedSlack) call(ctx context.Context, method, teamID, channelID string) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, nil
	}
	return s.t.Start(ctx, "slack."+method, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("slack.method", method),
			attribute.String("slack.team_id", teamID),
			attribute.String("slack.channel_id", channelID),
		))
}

func endCall(span trace.Span, err error) {
	if span == nil {
		return
	}
	if d, limited := konstruct.RetryAfter(err); limited {
		span.AddEvent("slack.rate_limited", trace.WithAttributes(attribute.Int64("retry_after_ms", d.Milliseconds())))
	}
	if code := konstruct.SlackCode(err); code != "" {
		span.SetAttributes(attribute.String("slack.error", code))
	}
	tracing.End(span, err)
}

func (s tracedSlack) Post(ctx context.Context, teamID, channelID, threadTS string, c konstruct.Content) (string, error) {
	ctx, span := s.call(ctx, "chat.postMessage", teamID, channelID)
	ts, err := s.Web.Post(ctx, teamID, channelID, threadTS, c)
	endCall(span, err)
	return ts, err
}

func (s tracedSlack) Update(ctx context.Context, teamID, channelID, ts string, c konstruct.Content) error {
	ctx, span := s.call(ctx, "chat.update", teamID, channelID)
	err := s.Web.Update(ctx, teamID, channelID, ts, c)
	endCall(span, err)
	return err
}

func (s tracedSlack) Delete(ctx context.Context, teamID, channelID, ts string) error {
	ctx, span := s.call(ctx, "chat.delete", teamID, channelID)
	err := s.Web.Delete(ctx, teamID, channelID, ts)
	endCall(span, err)
	return err
}

func (s tracedSlack) PostEphemeral(ctx context.Context, teamID, channelID, userID, threadTS, text string) error {
	ctx, span := s.call(ctx, "chat.postEphemeral", teamID, channelID)
	err := s.Web.PostEphemeral(ctx, teamID, channelID, userID, threadTS, text)
	endCall(span, err)
	return err
}

func (s tracedSlack) Replies(ctx context.Context, teamID, channelID, threadTS string) ([]konstruct.ThreadMessage, error) {
	ctx, span := s.call(ctx, "conversations.replies", teamID, channelID)
	msgs, err := s.Web.Replies(ctx, teamID, channelID, threadTS)
	if span != nil {
		span.SetAttributes(attribute.Int("slack.messages", len(msgs)))
	}
	endCall(span, err)
	return msgs, err
}

func (s tracedSlack) StartStream(ctx context.Context, teamID, channelID, threadTS, recipientUser, markdown string) (string, error) {
	ctx, span := s.call(ctx, "chat.startStream", teamID, channelID)
	ts, err := s.Web.StartStream(ctx, teamID, channelID, threadTS, recipientUser, markdown)
	endCall(span, err)
	return ts, err
}

func (s tracedSlack) AppendStream(ctx context.Context, teamID, channelID, ts, markdown string) error {
	ctx, span := s.call(ctx, "chat.appendStream", teamID, channelID)
	err := s.Web.AppendStream(ctx, teamID, channelID, ts, markdown)
	endCall(span, err)
	return err
}

func (s tracedSlack) StopStream(ctx context.Context, teamID, channelID, ts, markdown string) error {
	ctx, span := s.call(ctx, "chat.stopStream", teamID, channelID)
	err := s.Web.StopStream(ctx, teamID, channelID, ts, markdown)
	endCall(span, err)
	return err
}

// tracingCheck is doctor's look at tracing.*, when it is on: the collector
// takes an (empty) OTLP/HTTP export with the configured headers. Header
// values are never shown.
func tracingCheck(ctx context.Context, cfg *config.Config) (check, bool) {
	tc := cfg.TracingConfig()
	if !tc.Enabled() || tc.Validate() != nil { // off, or reported with the config
		return check{}, false
	}
	c := check{Name: "tracing", Detail: tc.Describe()}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodPost, tc.TracesURL(), http.NoBody)
	if err != nil {
		c.Detail += ": " + errorLine(err)
		c.Fix = "correct tracing.otlp_endpoint"
		return c, true
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	for k, v := range tc.Headers {
		req.Header.Set(k, v)
	}
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		c.Detail += ": the collector does not answer (" + errorLine(err) + ")"
		c.Fix = "start the collector (Jaeger, Tempo, otel-collector: OTLP/HTTP on :4318) or correct tracing.otlp_endpoint; answers are not held up meanwhile, the spans are dropped"
		return c, true
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode/100 == 2:
		c.OK = true
		c.Detail += ": the collector takes exports"
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		c.Detail += fmt.Sprintf(": the collector refused the export (HTTP %d)", resp.StatusCode)
		c.Fix = "check tracing.headers (KONSTRUCT_TRACING_HEADERS) against what the collector expects"
	default:
		c.Detail += fmt.Sprintf(": the collector answered HTTP %d", resp.StatusCode)
		c.Fix = "is tracing.otlp_endpoint the collector's OTLP/HTTP address (port 4318, path /v1/traces)?"
	}
	return c, true
}
