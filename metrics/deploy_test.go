package metrics_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"github.com/konstruct/konstruct/metrics"
)

// The dashboard and the alert rules an operator installs from deploy/.
var (
	dashboardPath = filepath.Join("..", "deploy", "grafana", "konstruct.json")
	alertsPath    = filepath.Join("..", "deploy", "prometheus", "alerts.yml")
	alertTests    = filepath.Join("..", "deploy", "prometheus", "alerts_test.yml")
)

// exposed is every series name a konstruct process can expose: the
// registry of metrics.New() as gathered, plus each collector of Metrics
// described (a vector has no series until its first label values, so
// Gather alone would miss konstruct_llm_errors_total and the like), with
// the _bucket/_sum/_count series of histograms. `up` is Prometheus's own.
func exposed(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New()
	names := map[string]bool{"up": true}
	add := func(name string, histogram bool) {
		names[name] = true
		if histogram {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[name+s] = true
			}
		}
	}
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		add(f.GetName(), f.GetType() == dto.MetricType_HISTOGRAM || f.GetType() == dto.MetricType_SUMMARY)
	}
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		for i := range v.NumField() {
			f := v.Field(i)
			if f.Kind() == reflect.Struct {
				walk(f)
				continue
			}
			c, ok := f.Interface().(prometheus.Collector)
			if !ok || f.IsNil() {
				continue
			}
			ch := make(chan *prometheus.Desc, 16)
			go func() { c.Describe(ch); close(ch) }()
			for d := range ch {
				if mm := fqName.FindStringSubmatch(d.String()); mm != nil {
					_, h := c.(prometheus.Histogram)
					_, hv := c.(*prometheus.HistogramVec)
					add(mm[1], h || hv)
				}
			}
		}
	}
	walk(reflect.ValueOf(m).Elem())
	if !names["konstruct_llm_errors_total"] || !names["konstruct_reply_latency_seconds_bucket"] || !names["go_goroutines"] {
		t.Fatalf("the exposed names miss vectors, histograms or the Go collector: %v", names)
	}
	return names
}

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promBraces   = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promNumber   = regexp.MustCompile(`\b\d[\w.]*|\$\w+`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*\s*\(?`)
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true}
)

// metricNames lists the metric names a PromQL expression selects: what is
// left once strings, label matchers, ranges, groupings, numbers and
// variables are gone, minus functions and keywords.
func metricNames(expr string) []string {
	s := promString.ReplaceAllString(expr, `""`)
	s = promBraces.ReplaceAllString(s, " ")
	s = promGrouping.ReplaceAllString(s, " ")
	s = promNumber.ReplaceAllString(s, " ")
	var out []string
	for _, tok := range promIdent.FindAllString(s, -1) {
		if strings.HasSuffix(tok, "(") { // a function or an aggregation
			continue
		}
		if tok = strings.TrimSpace(tok); !promKeywords[strings.ToLower(tok)] {
			out = append(out, tok)
		}
	}
	return out
}

func TestMetricNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up{job="konstruct"} == 0`, []string{"up"}},
		{`histogram_quantile(0.95, sum by (provider, le) (rate(konstruct_llm_time_to_first_token_seconds_bucket{instance=~"$instance"}[$__rate_interval])))`,
			[]string{"konstruct_llm_time_to_first_token_seconds_bucket"}},
		{`sum(rate(a_total{x!="y, z"}[10m])) / sum(rate(b_total[10m])) > 0.1 and sum(rate(b_total[10m])) > 0.01`, []string{"a_total", "b_total", "b_total"}},
		{`deriv(max(q{state="pending"})[10m:1m]) > 0`, []string{"q"}},
		{`max by (instance) (w{s="d"}) > 0 unless on (instance) v offset 5m`, []string{"w", "v"}},
	} {
		if got := metricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

type alertRule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func loadAlerts(t *testing.T) []alertRule {
	t.Helper()
	f, err := os.Open(alertsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var doc struct {
		Groups []struct {
			Name     string      `yaml:"name"`
			Interval string      `yaml:"interval"`
			Rules    []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true) // a misspelt field is an error, as in Prometheus
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("%s: %v", alertsPath, err)
	}
	var rules []alertRule
	for _, g := range doc.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// TestAlertRulesNameExposedMetrics: every rule of deploy/prometheus/alerts.yml
// parses, says how bad and what it is, and selects only metrics the binary
// exposes; the situations the issue asks alerts for are all covered.
func TestAlertRulesNameExposedMetrics(t *testing.T) {
	t.Parallel()
	known := exposed(t)
	rules := loadAlerts(t)
	seen := map[string]bool{}
	for _, r := range rules {
		if r.Alert == "" || r.Expr == "" {
			t.Errorf("rule %+v: needs alert and expr", r)
			continue
		}
		if seen[r.Alert] {
			t.Errorf("alert %s defined twice", r.Alert)
		}
		seen[r.Alert] = true
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, s)
		}
		if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("alert %s: needs a summary and a description", r.Alert)
		}
		if r.For != "" {
			if _, err := time.ParseDuration(r.For); err != nil {
				t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
			}
		}
		names := metricNames(r.Expr)
		if len(names) == 0 {
			t.Errorf("alert %s selects no metric: %s", r.Alert, r.Expr)
		}
		for _, n := range names {
			if !known[n] {
				t.Errorf("alert %s: %s is not a metric konstruct exposes", r.Alert, n)
			}
		}
	}
	for _, want := range []string{
		"KonstructWorkspaceWithoutSocket", "KonstructQueueGrowing", "KonstructReplyErrorRate",
		"KonstructPlaceholderStuck", "KonstructPostgresDown", "KonstructRedisDown", "KonstructDown",
	} {
		if !seen[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

// TestAlertRulesPromtool: promtool, where installed (.ci/run fetches it),
// checks the rules as Prometheus parses them and runs their unit tests
// (deploy/prometheus/alerts_test.yml).
func TestAlertRulesPromtool(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian: prometheus); TestAlertRulesNameExposedMetrics parsed the rules")
	}
	for _, args := range [][]string{{"check", "rules", alertsPath}, {"test", "rules", alertTests}} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := exec.CommandContext(ctx, promtool, args...).CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

type grafanaPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

// TestDashboardNamesExposedMetrics: deploy/grafana/konstruct.json is a
// dashboard whose every query selects metrics the binary exposes, through
// the datasource variable, and that shows what the issue asks for.
func TestDashboardNamesExposedMetrics(t *testing.T) {
	t.Parallel()
	known := exposed(t)
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID        string         `json:"uid"`
		Title      string         `json:"title"`
		Panels     []grafanaPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	used := map[string]bool{}
	check := func(where, expr string) {
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s selects no metric: %s", where, expr)
		}
		for _, n := range names {
			used[n] = true
			if !known[n] {
				t.Errorf("%s: %s is not a metric konstruct exposes", where, n)
			}
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			inner := strings.TrimSuffix(strings.TrimPrefix(v.Definition, "label_values("), ")")
			metric, _, _ := strings.Cut(inner, ",")
			check("variable "+v.Name, metric)
		}
	}
	ids := map[int]bool{}
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.X+p.GridPos.W > 24 || p.GridPos.W == 0 || p.GridPos.H == 0 {
				t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: datasource must be the ${datasource} variable", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				check("panel "+p.Title, tg.Expr)
			}
		}
	}
	walk(d.Panels)
	for _, want := range []string{
		"konstruct_envelopes_received_total",               // events
		"konstruct_envelopes_acked_total",                  // acks
		"konstruct_feedback_total",                         // feedback
		"konstruct_reply_latency_seconds_bucket",           // answer latency
		"konstruct_queue_tasks",                            // queue depth
		"konstruct_llm_time_to_first_token_seconds_bucket", // TTFT per provider
		"konstruct_llm_errors_total",                       // errors per provider
		"konstruct_slack_api_rate_limited_total",           // 429s per method
		"konstruct_sockets",                                // sockets by state
		"konstruct_dependency_up",                          // Postgres, Redis
		"konstruct_reply_oldest_waiting_seconds",           // stuck placeholders
	} {
		if !used[want] {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
}

// SetSockets counts workspaces by state and an app's sockets once.
func TestSetSockets(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	m.SetSockets([]metrics.WorkspaceSockets{
		{AppID: "A1", Connections: 2, Connected: 2},
		{AppID: "A1", Connections: 2, Connected: 2}, // a second workspace of the same app
		{AppID: "A2", Connections: 2, Connected: 1},
		{AppID: "A3", Connections: 2, Connected: 0},
		{AppID: "A4", Connections: 2, Revoked: true},
	})
	m.DependencyUp(metrics.DependencyRedis, false)
	m.OldestWaiting(90 * time.Second)
	m.Feedback(true)
	got := map[string]float64{}
	fams, _ := m.Registry.Gather()
	for _, f := range fams {
		for _, s := range f.GetMetric() {
			key := f.GetName()
			for _, l := range s.GetLabel() {
				key += "," + l.GetValue()
			}
			got[key] = s.GetGauge().GetValue() + s.GetCounter().GetValue()
		}
	}
	for k, want := range map[string]float64{
		"konstruct_workspaces,connected": 2, "konstruct_workspaces,degraded": 1,
		"konstruct_workspaces,disconnected": 1, "konstruct_workspaces,revoked": 1,
		"konstruct_sockets,connected": 3, "konstruct_sockets,disconnected": 5,
		"konstruct_dependency_up,redis": 0, "konstruct_reply_oldest_waiting_seconds": 90,
		"konstruct_feedback_total,up": 1, "konstruct_feedback_total,down": 0,
	} {
		if v, ok := got[k]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", k, v, ok, want)
		}
	}
	var nilM *metrics.Metrics
	nilM.SetSockets(nil)
	nilM.DependencyUp("postgres", true)
	nilM.OldestWaiting(time.Second)
	nilM.Feedback(false)
}
