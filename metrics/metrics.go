// Package metrics defines Konstruct's Prometheus metrics in one place. A
// *Metrics is created per process (or per test) with its own registry and
// handed to the pieces that observe; every method is safe on a nil
// *Metrics, so a piece built without metrics simply does not count.
// No tenant or team id is ever a label value: cardinality stays bounded.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds every collector.
type Metrics struct {
	Registry *prometheus.Registry

	EnvelopesReceived *prometheus.CounterVec // by type
	EnvelopesAcked    prometheus.Counter
	AckErrors         prometheus.Counter
	AckLatency        prometheus.Histogram
	GatewayQueueFull  prometheus.Counter
	GatewayQueueDepth prometheus.Gauge
	SocketsConnected  prometheus.Gauge
	Reconnects        prometheus.Counter

	IntakeRecorded     *prometheus.CounterVec // by sink (redis, spool)
	IntakeRecordFailed prometheus.Counter
	SpoolRecords       prometheus.Gauge
	IntakeRouteRetries prometheus.Counter

	RouteOutcomes *prometheus.CounterVec // by outcome/reason
	RouteLatency  prometheus.Histogram
	Enqueued      prometheus.Counter
	QueueLatency  prometheus.Histogram // enqueue → worker start
	QueueSize     *prometheus.GaugeVec // by state (pending, active, retry…)
	TasksDeferred prometheus.Counter   // put back because the tenant used its share of the workers

	LLMTimeToFirstToken *prometheus.HistogramVec // by provider
	LLMLatency          *prometheus.HistogramVec // by provider
	LLMErrors           *prometheus.CounterVec   // by provider, code
	LLMSlotWait         *prometheus.HistogramVec // by provider
	Replies             *prometheus.CounterVec   // by outcome
	ReplyLatency        prometheus.Histogram     // event → final answer
	BudgetCrossings     *prometheus.CounterVec   // by period, threshold

	SlackCalls      *prometheus.CounterVec // by method
	SlackRateLimits *prometheus.CounterVec // by method
	SlackErrors     *prometheus.CounterVec // by method

	Ops Ops // sockets and dependencies by state, oldest waiting reply, feedback (ops.go)
}

var fastBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}

// New creates the collectors and registers them, with Go and process
// collectors, on a fresh registry.
func New() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		Registry:          r,
		EnvelopesReceived: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "konstruct_envelopes_received_total", Help: "Socket Mode envelopes read, by envelope type."}, []string{"type"}),
		EnvelopesAcked:    prometheus.NewCounter(prometheus.CounterOpts{Name: "konstruct_envelopes_acked_total", Help: "Envelopes acked."}),
		AckErrors:         prometheus.NewCounter(prometheus.CounterOpts{Name: "konstruct_ack_errors_total", Help: "Acks that could not be written (Slack redelivers those)."}),
		AckLatency:        prometheus.NewHistogram(prometheus.HistogramOpts{Name: "konstruct_ack_latency_seconds", Help: "Envelope read → ack written.", Buckets: fastBuckets}),
		GatewayQueueFull:  prometheus.NewCounter(prometheus.CounterOpts{Name: "konstruct_gateway_queue_full_total", Help: "Envelopes left unacked because the gateway's intake was full (Slack redelivers them)."}),
		GatewayQueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{Name: "konstruct_gateway_queue_depth", Help: "Envelopes read and not yet acked or left unacked (normalizing, or waiting for their record)."}),
		SocketsConnected:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "konstruct_sockets_connected", Help: "Socket Mode connections currently open."}),
		Reconnects:        prometheus.NewCounter(prometheus.CounterOpts{Name: "konstruct_socket_reconnects_total", Help: "Socket Mode reconnects."}),

		IntakeRecorded:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "konstruct_intake_recorded_total", Help: "Envelopes durably recorded before their ack, by where: redis, or the disk spool while Redis does not answer."}, []string{"sink"}),
		IntakeRecordFailed: prometheus.NewCounter(prometheus.CounterOpts{Name: "konstruct_intake_record_failures_total", Help: "Envelopes left unacked because neither Redis nor the spool could record them (Slack redelivers them)."}),
		SpoolRecords:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "konstruct_spool_records", Help: "Records in the disk spool, waiting for Redis."}),
		IntakeRouteRetries: prometheus.NewCounter(prometheus.CounterOpts{Name: "konstruct_intake_route_retries_total", Help: "Recorded envelopes routed again after a transient error (Redis, Postgres, Slack)."}),

		RouteOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "konstruct_route_outcomes_total", Help: "Router decisions, by outcome."}, []string{"outcome"}),
		RouteLatency:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "konstruct_route_latency_seconds", Help: "Time the router spends on one message.", Buckets: fastBuckets}),
		Enqueued:      prometheus.NewCounter(prometheus.CounterOpts{Name: "konstruct_tasks_enqueued_total", Help: "reply:generate tasks enqueued."}),
		QueueLatency:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "konstruct_queue_latency_seconds", Help: "Enqueue → worker start.", Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14)}),
		TasksDeferred: prometheus.NewCounter(prometheus.CounterOpts{Name: "konstruct_tasks_deferred_total", Help: "Reply tasks put back for a second because their tenant was at its share of the workers."}),
		QueueSize:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "konstruct_queue_tasks", Help: "Tasks in the reply queue, by state."}, []string{"state"}),

		LLMTimeToFirstToken: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "konstruct_llm_time_to_first_token_seconds", Help: "LLM request → first token, by provider.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}, []string{"provider"}),
		LLMLatency:          prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "konstruct_llm_latency_seconds", Help: "LLM request → last token, by provider.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}, []string{"provider"}),
		LLMSlotWait:         prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "konstruct_llm_slot_wait_seconds", Help: "Time an LLM request waited for one of its provider's slots (llm.providers[].max_concurrency), by provider.", Buckets: prometheus.ExponentialBuckets(0.001, 3, 12)}, []string{"provider"}),
		LLMErrors:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: "konstruct_llm_errors_total", Help: "Failed LLM attempts, by provider and error code."}, []string{"provider", "code"}),
		Replies:             prometheus.NewCounterVec(prometheus.CounterOpts{Name: "konstruct_replies_total", Help: "Replies finished, by outcome."}, []string{"outcome"}),
		ReplyLatency:        prometheus.NewHistogram(prometheus.HistogramOpts{Name: "konstruct_reply_latency_seconds", Help: "Event → final answer in the thread.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}),
		BudgetCrossings: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "konstruct_budget_crossings_total",
			Help: "Tenants' token budgets passing 80 % or 100 % (threshold) of their day or month (period); the log line names the tenant."}, []string{"period", "threshold"}),

		SlackCalls:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "konstruct_slack_api_calls_total", Help: "Slack Web API calls, by method."}, []string{"method"}),
		SlackRateLimits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "konstruct_slack_api_rate_limited_total", Help: "Slack Web API 429 answers, by method."}, []string{"method"}),
		SlackErrors:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "konstruct_slack_api_errors_total", Help: "Slack Web API errors other than 429, by method."}, []string{"method"}),
	}
	r.MustRegister(m.EnvelopesReceived, m.EnvelopesAcked, m.AckErrors, m.AckLatency, m.GatewayQueueFull, m.GatewayQueueDepth,
		m.SocketsConnected, m.Reconnects, m.IntakeRecorded, m.IntakeRecordFailed, m.SpoolRecords, m.IntakeRouteRetries, m.RouteOutcomes, m.RouteLatency, m.Enqueued, m.QueueLatency, m.QueueSize, m.TasksDeferred,
		m.LLMTimeToFirstToken, m.LLMLatency, m.LLMErrors, m.LLMSlotWait, m.Replies, m.ReplyLatency, m.BudgetCrossings, m.SlackCalls, m.SlackRateLimits, m.SlackErrors)
	for _, p := range []string{"day", "month"} {
		for _, th := range []string{"80", "100"} {
			m.BudgetCrossings.WithLabelValues(p, th)
		}
	}
	m.Ops = newOps(r)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// Envelope counts an envelope read from a socket.
func (m *Metrics) Envelope(typ string) {
	if m != nil {
		m.EnvelopesReceived.WithLabelValues(typ).Inc()
	}
}

// Ack records one ack: how long after the read it was written, or its failure.
func (m *Metrics) Ack(d time.Duration, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.AckErrors.Inc()
		return
	}
	m.EnvelopesAcked.Inc()
	m.AckLatency.Observe(d.Seconds())
}

// Prefiltered counts a message the gateway dropped on what its payload
// shows (no routing happened: no latency is observed).
func (m *Metrics) Prefiltered(outcome string) {
	if m != nil {
		m.RouteOutcomes.WithLabelValues(outcome).Inc()
	}
}

// Route counts a router decision and how long it took.
func (m *Metrics) Route(outcome string, d time.Duration) {
	if m != nil {
		m.RouteOutcomes.WithLabelValues(outcome).Inc()
		m.RouteLatency.Observe(d.Seconds())
	}
}

// SlackCall counts a Web API call; rateLimited marks a 429.
func (m *Metrics) SlackCall(method string, err error, rateLimited bool) {
	if m == nil {
		return
	}
	m.SlackCalls.WithLabelValues(method).Inc()
	switch {
	case rateLimited:
		m.SlackRateLimits.WithLabelValues(method).Inc()
	case err != nil:
		m.SlackErrors.WithLabelValues(method).Inc()
	}
}

// LLMAttempt records one attempt at a provider.
func (m *Metrics) LLMAttempt(provider, code string, ttft, latency, slotWait time.Duration) {
	if m == nil {
		return
	}
	if slotWait > 0 {
		m.LLMSlotWait.WithLabelValues(provider).Observe(slotWait.Seconds())
	}
	if code != "" {
		m.LLMErrors.WithLabelValues(provider, code).Inc()
		return
	}
	if ttft > 0 {
		m.LLMTimeToFirstToken.WithLabelValues(provider).Observe(ttft.Seconds())
	}
	m.LLMLatency.WithLabelValues(provider).Observe(latency.Seconds())
}

// Reply counts a finished reply and its end-to-end latency.
func (m *Metrics) Reply(outcome string, sinceEvent time.Duration) {
	if m == nil {
		return
	}
	m.Replies.WithLabelValues(outcome).Inc()
	if sinceEvent > 0 {
		m.ReplyLatency.Observe(sinceEvent.Seconds())
	}
}

// BudgetCrossed counts a tenant's budget of period ("day", "month")
// passing threshold percent (80 or 100). The tenant is never a label.
func (m *Metrics) BudgetCrossed(period string, threshold int) {
	if m != nil {
		m.BudgetCrossings.WithLabelValues(period, strconv.Itoa(threshold)).Inc()
	}
}

// QueueFull counts an envelope left unacked because the router queue was full.
func (m *Metrics) QueueFull() {
	if m != nil {
		m.GatewayQueueFull.Inc()
	}
}

// QueueDepth records how many events wait for the router.
func (m *Metrics) QueueDepth(n int) {
	if m != nil {
		m.GatewayQueueDepth.Set(float64(n))
	}
}

// Recorded counts n envelopes recorded in sink ("redis" or "spool").
func (m *Metrics) Recorded(sink string, n int) {
	if m != nil {
		m.IntakeRecorded.WithLabelValues(sink).Add(float64(n))
	}
}

// RecordFailed counts n envelopes that could not be recorded.
func (m *Metrics) RecordFailed(n int) {
	if m != nil {
		m.IntakeRecordFailed.Add(float64(n))
	}
}

// SpoolDepth records how many records wait in the disk spool.
func (m *Metrics) SpoolDepth(n int) {
	if m != nil {
		m.SpoolRecords.Set(float64(n))
	}
}

// RouteRetry counts a recorded envelope routed again after a transient error.
func (m *Metrics) RouteRetry() {
	if m != nil {
		m.IntakeRouteRetries.Inc()
	}
}

// SocketConnected adds delta (+1 on connect, -1 on loss) to the open sockets.
func (m *Metrics) SocketConnected(delta int) {
	if m != nil {
		m.SocketsConnected.Add(float64(delta))
	}
}

// Reconnect counts a Socket Mode reconnect.
func (m *Metrics) Reconnect() {
	if m != nil {
		m.Reconnects.Inc()
	}
}

// TaskEnqueued counts a reply:generate task enqueued.
func (m *Metrics) TaskEnqueued() {
	if m != nil {
		m.Enqueued.Inc()
	}
}

// Deferred counts a task put back for its tenant's fair share.
func (m *Metrics) Deferred() {
	if m != nil {
		m.TasksDeferred.Inc()
	}
}
