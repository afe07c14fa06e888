package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTracingOffByDefault(t *testing.T) {
	t.Parallel()
	cfg, err := Load(Options{Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	tc := cfg.TracingConfig()
	if tc.Enabled() || tc.Endpoint != "" || tc.SampleRatio != 1 || len(tc.Headers) != 0 {
		t.Fatalf("tracing defaults: %+v", tc)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if got := tc.Describe(); got != "off" {
		t.Errorf("Describe() = %q, want off", got)
	}
}

func TestTracingKeysFromEnvironment(t *testing.T) {
	t.Parallel()
	cfg, err := Load(Options{Getenv: env(map[string]string{
		"KONSTRUCT_TRACING_OTLP_ENDPOINT": "http://127.0.0.1:4318",
		"KONSTRUCT_TRACING_SAMPLE_RATIO":  "0.25",
		"KONSTRUCT_TRACING_HEADERS":       "Authorization=Bearer s3cret, X-Scope-OrgID = acme",
	})})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	tc := cfg.TracingConfig()
	if !tc.Enabled() || tc.SampleRatio != 0.25 || tc.TracesURL() != "http://127.0.0.1:4318/v1/traces" {
		t.Fatalf("tracing: %+v, url %s", tc, tc.TracesURL())
	}
	if tc.Headers["Authorization"] != "Bearer s3cret" || tc.Headers["X-Scope-OrgID"] != "acme" || len(tc.Headers) != 2 {
		t.Fatalf("headers: %q", tc.Headers)
	}
	d := tc.Describe()
	if strings.Contains(d, "s3cret") || strings.Contains(d, "acme") || !strings.Contains(d, "Authorization, X-Scope-OrgID") {
		t.Errorf("Describe() shows a header value or misses a name: %q", d)
	}
}

func TestTracingKeysFromFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "k.yaml")
	body := `
tracing:
  otlp_endpoint: https://otel.example.test:4318/custom/path
  sample_ratio: 0.5
  headers:
    authorization: Basic czNjcmV0
`
	if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	// Headers are secrets: a file others can read is refused.
	if _, err := Load(Options{Path: file, Getenv: env(nil)}); err == nil || !strings.Contains(err.Error(), "tracing.headers") {
		t.Fatalf("world-readable file with tracing.headers: err = %v", err)
	}
	if err := os.Chmod(file, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(Options{Path: file, Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Unknown) != 0 {
		t.Errorf("unknown keys: %v", cfg.Unknown)
	}
	tc := cfg.TracingConfig()
	// A path is kept as given (the collector's own route).
	if tc.TracesURL() != "https://otel.example.test:4318/custom/path" || tc.SampleRatio != 0.5 || tc.Headers["authorization"] != "Basic czNjcmV0" {
		t.Fatalf("tracing: %+v, url %s", tc, tc.TracesURL())
	}
}

func TestTracingInvalidRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		vars map[string]string
		want string
	}{
		{"host:port alone", map[string]string{"KONSTRUCT_TRACING_OTLP_ENDPOINT": "127.0.0.1:4318"},
			"tracing.otlp_endpoint is not a valid URL: give the collector's OTLP/HTTP address, e.g. http://127.0.0.1:4318"},
		{"no scheme", map[string]string{"KONSTRUCT_TRACING_OTLP_ENDPOINT": "collector.local/v1/traces"},
			"tracing.otlp_endpoint must be an http:// or https:// URL"},
		{"grpc scheme", map[string]string{"KONSTRUCT_TRACING_OTLP_ENDPOINT": "grpc://collector:4317"},
			"tracing.otlp_endpoint must be an http:// or https:// URL"},
		{"unparsable", map[string]string{"KONSTRUCT_TRACING_OTLP_ENDPOINT": "http://[::1"},
			"tracing.otlp_endpoint is not a valid URL"},
		{"no host", map[string]string{"KONSTRUCT_TRACING_OTLP_ENDPOINT": "http:///v1/traces"},
			"tracing.otlp_endpoint must name a host"},
		{"credentials in the URL", map[string]string{"KONSTRUCT_TRACING_OTLP_ENDPOINT": "https://user:pw@collector:4318"},
			"tracing.otlp_endpoint must not carry credentials"},
		{"ratio above 1", map[string]string{"KONSTRUCT_TRACING_SAMPLE_RATIO": "1.5"},
			"tracing.sample_ratio must be between 0 and 1"},
		{"negative ratio", map[string]string{"KONSTRUCT_TRACING_SAMPLE_RATIO": "-0.1"},
			"tracing.sample_ratio must be between 0 and 1"},
		{"bad header", map[string]string{"KONSTRUCT_TRACING_OTLP_ENDPOINT": "http://c:4318", "KONSTRUCT_TRACING_HEADERS": "bad name=x"},
			"tracing.headers has an invalid header name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Load(Options{Getenv: env(tc.vars)})
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "KONSTRUCT_TRACING_") {
				t.Errorf("error does not name the variable: %v", err)
			}
			if strings.Contains(err.Error(), "pw@") {
				t.Errorf("error shows a password: %v", err)
			}
		})
	}
}

func TestTracingRatioNotANumber(t *testing.T) {
	t.Parallel()
	cfg, err := Load(Options{Getenv: env(map[string]string{"KONSTRUCT_TRACING_SAMPLE_RATIO": "half"})})
	if err == nil || !strings.Contains(err.Error(), "tracing.sample_ratio must be a number") {
		t.Fatalf("Load() = %v", err)
	}
	if cfg == nil || cfg.Tracing.SampleRatio != 1 {
		t.Fatalf("the rest should load with the default ratio: %+v", cfg)
	}
}
