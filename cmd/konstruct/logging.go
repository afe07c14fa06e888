package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"

	"github.com/konstruct/konstruct"
)

// newLogger builds the process logger: JSON for services, text on a
// terminal ("auto"), with every string attribute passed through
// konstruct.Redact so that no Slack token reaches a log line.
func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(strings.ToUpper(level)))
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "auto" || format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	var h slog.Handler
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(redactHandler{throttleHandler{Handler: h, st: &throttleState{last: map[string]throttleEntry{}}}})
}

// throttledComponents are the libraries that repeat one warning many times
// a second while a dependency is down (go-redis' pool, asynq's loops,
// trace exports while the collector is down).
var throttledComponents = map[string]bool{"redis": true, "asynq": true, "tracing": true}

// throttleWindow is how long an identical library warning stays quiet.
const throttleWindow = 10 * time.Second

// throttleHandler lets a library warning through once per throttleWindow,
// with the number of copies it held back; everything else passes as is.
type throttleHandler struct {
	slog.Handler
	on bool // this logger carries a throttled component
	st *throttleState
}

type throttleState struct {
	mu   sync.Mutex
	last map[string]throttleEntry
}

type throttleEntry struct {
	at         time.Time
	suppressed int
}

func (h throttleHandler) Handle(ctx context.Context, r slog.Record) error {
	on := h.on
	if !on {
		r.Attrs(func(a slog.Attr) bool {
			on = a.Key == "component" && throttledComponents[a.Value.String()]
			return !on
		})
	}
	if !on || r.Level < slog.LevelWarn {
		return h.Handler.Handle(ctx, r)
	}
	h.st.mu.Lock()
	e, seen := h.st.last[r.Message]
	if seen && r.Time.Sub(e.at) < throttleWindow {
		e.suppressed++
		h.st.last[r.Message] = e
		h.st.mu.Unlock()
		return nil
	}
	if len(h.st.last) > 1000 { // messages with ids in them: keep the map bounded
		clear(h.st.last)
	}
	h.st.last[r.Message] = throttleEntry{at: r.Time}
	h.st.mu.Unlock()
	if e.suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("repeated", e.suppressed))
	}
	return h.Handler.Handle(ctx, r)
}

func (h throttleHandler) WithAttrs(as []slog.Attr) slog.Handler {
	on := h.on
	for _, a := range as {
		on = on || a.Key == "component" && throttledComponents[a.Value.String()]
	}
	return throttleHandler{Handler: h.Handler.WithAttrs(as), on: on, st: h.st}
}

func (h throttleHandler) WithGroup(name string) slog.Handler {
	return throttleHandler{Handler: h.Handler.WithGroup(name), on: h.on, st: h.st}
}

// processLogger is the logger of the last command that loaded its config:
// libraries with a process-wide logger (go-redis) write through it.
var (
	processLogger   atomic.Pointer[slog.Logger]
	redisLoggerOnce sync.Once
)

// routeLibraryLogs sends go-redis's own messages (pool dial failures while
// Redis is down…) and OpenTelemetry's (a trace export that failed: the
// collector is down) to the process logger, so that a service's stderr
// stays one JSON object per line.
func routeLibraryLogs() {
	redisLoggerOnce.Do(func() {
		redis.SetLogger(redisLogger{})
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			l := processLogger.Load()
			if l == nil {
				l = slog.Default()
			}
			// The error names the endpoint at most, never the headers.
			l.Warn("traces not exported", "component", "tracing", "error", err.Error())
		}))
	})
}

type redisLogger struct{}

func (redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l := processLogger.Load()
	if l == nil {
		l = slog.Default()
	}
	l.WarnContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)), "component", "redis")
}

// redactHandler redacts Slack tokens in the message and string attributes.
type redactHandler struct{ slog.Handler }

func (h redactHandler) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, konstruct.Redact(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(redactAttr(a))
		return true
	})
	return h.Handler.Handle(ctx, nr)
}

func (h redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = redactAttr(a)
	}
	return redactHandler{h.Handler.WithAttrs(out)}
}

func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{h.Handler.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, konstruct.Redact(v.String()))
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, konstruct.Redact(err.Error()))
		}
		// Anything else (a slice, a struct, a Stringer) keeps its shape
		// unless its printed form shows a token: then it is logged as
		// that text, redacted.
		if s := fmt.Sprintf("%+v", v.Any()); konstruct.Redact(s) != s {
			return slog.String(a.Key, konstruct.Redact(s))
		}
	case slog.KindGroup:
		attrs := v.Group()
		out := make([]any, len(attrs))
		for i, ga := range attrs {
			out[i] = redactAttr(ga)
		}
		return slog.Group(a.Key, out...)
	}
	return a
}
