package main

import (
	"compress/gzip"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/konstruct/konstruct/bot"
)

// otlpReceiver is an OTLP/HTTP collector in process: it takes POST
// /v1/traces (protobuf, gzip or not) and keeps the spans with their
// resource's attributes.
type otlpReceiver struct {
	t     *testing.T
	srv   *httptest.Server
	conns atomic.Int64 // connections accepted

	mu      sync.Mutex
	spans   []*tracev1.Span
	res     []map[string]string // resource attributes, per span
	headers []http.Header
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{t: t}
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
	r.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			r.conns.Add(1)
		}
	}
	r.srv.Start()
	t.Cleanup(r.srv.Close)
	return r
}

func (r *otlpReceiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var ex collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &ex); err != nil {
		r.t.Errorf("export is not an ExportTraceServiceRequest (Content-Type %s): %v", req.Header.Get("Content-Type"), err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.headers = append(r.headers, req.Header.Clone())
	for _, rs := range ex.GetResourceSpans() {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, s)
				r.res = append(r.res, res)
			}
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (r *otlpReceiver) received() ([]*tracev1.Span, []map[string]string, []http.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracev1.Span(nil), r.spans...), append([]map[string]string(nil), r.res...), append([]http.Header(nil), r.headers...)
}

func attrs(kvs []*commonv1.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		v := kv.GetValue()
		switch {
		case v.GetStringValue() != "":
			m[kv.GetKey()] = v.GetStringValue()
		default:
			m[kv.GetKey()] = strings.TrimSpace(prototext.Format(v))
		}
	}
	return m
}

func spanID(b []byte) string { return hex.EncodeToString(b) }

// TestOneTracePerMessage: with tracing.otlp_endpoint set, one mention is
// one trace — slack.envelope → route → reply → llm.generate and the Slack
// writes — exported by OTLP/HTTP with the configured headers; no span
// carries the question or the answer, and chatter the gateway drops makes
// no span at all.
func TestOneTracePerMessage(t *testing.T) {
	t.Parallel()
	col := newOTLPReceiver(t)
	const question = "what is the secret recipe"
	e := newEnv(t, envOpts{})
	_, ws := e.seed("traced")
	vars := e.with(
		"KONSTRUCT_TRACING_OTLP_ENDPOINT", col.srv.URL,
		"KONSTRUCT_TRACING_HEADERS", "Authorization=Bearer collector-s3cret",
	)
	d := startDaemon(t, vars, roles{gateway: true, worker: true}, 10*time.Second)
	if d.d.tracing == nil {
		t.Fatal("tracing is on but the daemon has no provider")
	}

	// Chatter: top-level posts that do not mention the bot, acked by the
	// gateway without a record.
	for range 5 {
		if _, err := e.sim.Post(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "just chatting about the recipe", ""); err != nil {
			t.Fatal(err)
		}
	}
	ts, err := e.sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], question, "")
	if err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, e.sim, ws, ws.GeneralChannelID, ts, question, 20*time.Second)

	// The stop exports what is still batched.
	if took, err := d.stop(t, 30*time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	} else if took > 15*time.Second {
		t.Errorf("stop took %v", took)
	}
	spans, res, headers := col.received()
	if len(spans) == 0 {
		t.Fatal("no span exported")
	}
	for _, h := range headers {
		if h.Get("Authorization") != "Bearer collector-s3cret" {
			t.Errorf("export without the configured header: %v", h)
		}
	}
	if strings.Contains(d.logs.String(), "collector-s3cret") {
		t.Error("the logs show a tracing header's value")
	}

	// No span carries the question, the answer or a token.
	for _, s := range spans {
		text := prototext.Format(s)
		for _, banned := range []string{"secret recipe", "chatting", "Answer:", ws.BotToken, ws.AppToken} {
			if strings.Contains(text, banned) {
				t.Errorf("span %s carries %q:\n%s", s.GetName(), banned, text)
			}
		}
	}
	for _, r := range res {
		if r["service.name"] != "konstruct" || r["konstruct.role"] != "run" || r["service.version"] == "" {
			t.Fatalf("resource: %v", r)
		}
	}

	// The reply's trace.
	var reply *tracev1.Span
	envelopes := 0
	for _, s := range spans {
		switch s.GetName() {
		case "reply":
			if reply != nil {
				t.Fatalf("two reply spans for one mention")
			}
			reply = s
		case "slack.envelope":
			envelopes++
		}
	}
	if reply == nil {
		t.Fatalf("no reply span among %d spans", len(spans))
	}
	// The mention is an app_mention and a message event (twins: the second
	// ends at route as a duplicate, or is dropped at the gateway); the five
	// chatter posts make no span.
	if envelopes < 1 || envelopes > 2 {
		t.Errorf("%d slack.envelope spans, want 1 or 2 (the mention's twins; chatter none)", envelopes)
	}
	trace := spanID(reply.GetTraceId())
	byName := map[string][]*tracev1.Span{}
	byID := map[string]*tracev1.Span{}
	for _, s := range spans {
		if spanID(s.GetTraceId()) != trace {
			continue
		}
		byName[s.GetName()] = append(byName[s.GetName()], s)
		byID[spanID(s.GetSpanId())] = s
	}
	t.Logf("trace %s: %v; %d spans in all, %d slack.envelope", trace, names(byName), len(spans), envelopes)
	one := func(name string) *tracev1.Span {
		t.Helper()
		if len(byName[name]) != 1 {
			t.Fatalf("trace %s has %d %q spans, want 1; spans: %v", trace, len(byName[name]), name, names(byName))
		}
		return byName[name][0]
	}
	env, route, llmSpan := one("slack.envelope"), one("route"), one("llm.generate")
	parent := func(child, want *tracev1.Span) {
		t.Helper()
		if spanID(child.GetParentSpanId()) != spanID(want.GetSpanId()) {
			t.Errorf("%s's parent is %s, want %s", child.GetName(), byID[spanID(child.GetParentSpanId())].GetName(), want.GetName())
		}
	}
	if len(env.GetParentSpanId()) != 0 {
		t.Errorf("slack.envelope has a parent")
	}
	parent(route, env)
	parent(reply, route)
	parent(llmSpan, reply)
	if a := attrs(env.GetAttributes()); a["slack.team_id"] != ws.TeamID || a["slack.envelope_type"] != "events_api" || a["slack.event_type"] == "" {
		t.Errorf("slack.envelope attributes: %v", a)
	}
	if a := attrs(route.GetAttributes()); a["route.outcome"] != "enqueued" {
		t.Errorf("route attributes: %v", a)
	}
	if a := attrs(reply.GetAttributes()); a["reply.outcome"] != "answered" {
		t.Errorf("reply attributes: %v", a)
	}
	if a := attrs(llmSpan.GetAttributes()); a["gen_ai.response.model"] != "fake-model" || a["llm.provider"] == "" || a["gen_ai.usage.output_tokens"] == "" {
		t.Errorf("llm.generate attributes: %v", a)
	}
	// The answer's Slack writes: the final chat.update of the placeholder
	// (or a chat.postMessage) under the reply.
	writes := 0
	for _, name := range []string{"slack.chat.update", "slack.chat.postMessage"} {
		for _, s := range byName[name] {
			if spanID(s.GetParentSpanId()) == spanID(reply.GetSpanId()) {
				writes++
				if a := attrs(s.GetAttributes()); a["slack.method"] == "" || a["slack.team_id"] != ws.TeamID {
					t.Errorf("%s attributes: %v", name, a)
				}
			}
		}
	}
	if writes == 0 {
		t.Errorf("no Slack write under the reply; spans: %v", names(byName))
	}
	for _, s := range byID {
		if s.GetStatus().GetCode() == tracev1.Status_STATUS_CODE_ERROR {
			t.Errorf("span %s failed: %v", s.GetName(), s.GetStatus())
		}
		if s.GetEndTimeUnixNano() < s.GetStartTimeUnixNano() {
			t.Errorf("span %s ends before it starts", s.GetName())
		}
	}
}

func names(m map[string][]*tracev1.Span) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = len(v)
	}
	return out
}

// TestTracingOffByDefault: without tracing.otlp_endpoint no exporter is
// built and nothing is sent, even with OpenTelemetry's own variables in
// the process environment.
func TestTracingOffByDefault(t *testing.T) {
	col := newOTLPReceiver(t)
	// Not parallel: the SDK would read these from the process environment.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", col.srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", col.srv.URL+"/v1/traces")
	e := newEnv(t, envOpts{})
	_, ws := e.seed("untraced")
	d := startDaemon(t, e.vars, roles{gateway: true, worker: true}, 10*time.Second)
	if d.d.tracing != nil {
		t.Fatal("tracing is off but the daemon has a provider")
	}
	if _, traced := d.d.slack.(*bot.Web); !traced {
		t.Errorf("tracing off: the Slack of the router and workers is %T, want the bare *bot.Web", d.d.slack)
	}
	ts, err := e.sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "untraced question", "")
	if err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, e.sim, ws, ws.GeneralChannelID, ts, "untraced question", 20*time.Second)
	if _, err := d.stop(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := col.conns.Load(); n != 0 {
		t.Errorf("%d connections to the collector with tracing off", n)
	}
	if strings.Contains(d.logs.String(), "traces exported") {
		t.Error("the daemon says it exports traces")
	}
}

// TestDoctorChecksTheCollector: doctor tries an export with the headers
// and names them without their values; a collector that refuses them is a
// failure with its fix.
func TestDoctorChecksTheCollector(t *testing.T) {
	t.Parallel()
	col := newOTLPReceiver(t)
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	t.Cleanup(refusing.Close)
	e := newEnv(t, envOpts{})
	e.seed("doc")
	headers := "Authorization=Bearer doctor-s3cret"

	r := cli(t, e.with("KONSTRUCT_TRACING_OTLP_ENDPOINT", col.srv.URL, "KONSTRUCT_TRACING_HEADERS", headers), "doctor")
	rowMatches(t, r.stdout, `^tracing\s+PASS\s+OTLP/HTTP to `+regexp.QuoteMeta(col.srv.URL)+`/v1/traces, sample ratio 1, headers Authorization \(values hidden\): the collector takes exports`)
	if _, _, got := col.received(); len(got) != 1 || got[0].Get("Authorization") != "Bearer doctor-s3cret" {
		t.Errorf("doctor's export: %v", got)
	}

	r = cli(t, e.with("KONSTRUCT_TRACING_OTLP_ENDPOINT", refusing.URL, "KONSTRUCT_TRACING_HEADERS", headers), "doctor")
	rowMatches(t, r.stdout, `^tracing\s+FAIL\s+.*the collector refused the export \(HTTP 401\)`, `→ fix: check tracing.headers`)
	for _, out := range []string{r.stdout, r.stderr, r.line()} {
		if strings.Contains(out, "doctor-s3cret") {
			t.Errorf("doctor shows a header's value:\n%s", out)
		}
	}

	// Off: no tracing row.
	r = cli(t, e.vars, "doctor")
	if strings.Contains(r.stdout, "\ntracing") {
		t.Errorf("doctor reports tracing while it is off:\n%s", r.stdout)
	}
}
