// Package otlp sets up OpenTelemetry's SDK for a konstruct process: a
// tracer provider that batches spans and exports them by OTLP/HTTP
// (protobuf, gzip) to tracing.otlp_endpoint. Only cmd/konstruct imports it;
// the product packages take a trace.Tracer (internal/tracing).
package otlp

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/konstruct/konstruct/internal/tracing"
)

// Options are what the process adds to tracing.*.
type Options struct {
	// Role is the process's role (run, gateway, worker), a resource
	// attribute: which half of the flow a span comes from.
	Role string
	// Version is the binary's version (service.version).
	Version string
	// BatchTimeout is the longest a span waits in the batch before it is
	// exported (default 5 s; tests shorten it).
	BatchTimeout time.Duration
	// ExportTimeout bounds one export (default 10 s).
	ExportTimeout time.Duration
}

// Provider is the tracer provider of a process with tracing on. Its zero
// value and nil are tracing off: Tracer returns nil.
type Provider struct {
	tp     *sdktrace.TracerProvider
	client *http.Client

	once        sync.Once
	shutdownErr error
}

// New returns the provider of cfg, or nil when tracing is off (no
// endpoint): then nothing is exported and no connection is made. cfg is
// expected to be valid (tracing.Config.Validate).
func New(cfg tracing.Config, opts Options) (*Provider, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	// A client of its own: its connections are closed at Shutdown, and no
	// other part of the process shares (or instruments) them.
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	exp, err := otlptracehttp.New(context.Background(),
		otlptracehttp.WithEndpointURL(cfg.TracesURL()),
		otlptracehttp.WithHeaders(cfg.Headers),
		otlptracehttp.WithCompression(otlptracehttp.GzipCompression),
		otlptracehttp.WithTimeout(cmp.Or(opts.ExportTimeout, 10*time.Second)),
		otlptracehttp.WithHTTPClient(client),
	)
	if err != nil {
		// The error may quote the endpoint, never the headers.
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	host, _ := os.Hostname()
	res := resource.NewSchemaless(
		attribute.String("service.name", "konstruct"),
		attribute.String("service.version", opts.Version),
		attribute.String("konstruct.role", opts.Role),
		attribute.String("host.name", host),
		attribute.Int("process.pid", os.Getpid()),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(cmp.Or(opts.BatchTimeout, 5*time.Second))),
	)
	return &Provider{tp: tp, client: client}, nil
}

// Tracer returns the tracer of a package (its import path), nil when
// tracing is off.
func (p *Provider) Tracer(name string) trace.Tracer {
	if p == nil || p.tp == nil {
		return nil
	}
	return p.tp.Tracer(name)
}

// Shutdown exports the spans still batched and stops, within ctx's
// deadline; what is left then is dropped. Safe on nil, and to call twice
// (the second call returns the first's result).
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil || p.tp == nil {
		return nil
	}
	p.once.Do(func() {
		err := p.tp.Shutdown(ctx)
		p.client.CloseIdleConnections()
		if err != nil {
			p.shutdownErr = fmt.Errorf("tracing: flush spans: %w", err)
		}
	})
	return p.shutdownErr
}
