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

	"github.com/redis/go-redis/v9"

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
	return slog.New(redactHandler{h})
}

// processLogger is the logger of the last command that loaded its config:
// libraries with a process-wide logger (go-redis) write through it.
var (
	processLogger   atomic.Pointer[slog.Logger]
	redisLoggerOnce sync.Once
)

// routeLibraryLogs sends go-redis's own messages (pool dial failures while
// Redis is down…) to the process logger, so that a service's stderr stays
// one JSON object per line.
func routeLibraryLogs() {
	redisLoggerOnce.Do(func() { redis.SetLogger(redisLogger{}) })
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
