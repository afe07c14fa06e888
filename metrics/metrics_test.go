package metrics_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/konstruct/konstruct/metrics"
)

// A piece built without metrics calls the same methods on a nil *Metrics.
func TestNilIsSafe(t *testing.T) {
	t.Parallel()
	var m *metrics.Metrics
	m.Envelope("events_api")
	m.Ack(time.Millisecond, nil)
	m.Route("enqueued", time.Millisecond)
	m.SlackCall("chat.update", nil, true)
	m.LLMAttempt("local", "", time.Millisecond, time.Second, 0)
	m.Reply("answered", time.Second)
	m.Deferred()
}

func TestExposition(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	m.Envelope("events_api")
	m.Ack(300*time.Microsecond, nil)
	m.Ack(0, errors.New("write: broken pipe"))
	m.Route("duplicate", time.Millisecond)
	m.SlackCall("chat.update", errors.New("429"), true)
	m.SlackCall("chat.postMessage", errors.New("channel_not_found"), false)
	m.LLMAttempt("local", "timeout", 0, 0, 0)
	m.Reply("answered", 2*time.Second)

	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`konstruct_envelopes_received_total{type="events_api"} 1`,
		`konstruct_envelopes_acked_total 1`,
		`konstruct_ack_errors_total 1`,
		`konstruct_ack_latency_seconds_bucket{le="0.0005"} 1`,
		`konstruct_route_outcomes_total{outcome="duplicate"} 1`,
		`konstruct_slack_api_rate_limited_total{method="chat.update"} 1`,
		`konstruct_slack_api_errors_total{method="chat.postMessage"} 1`,
		`konstruct_llm_errors_total{code="timeout",provider="local"} 1`,
		`konstruct_replies_total{outcome="answered"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
}
