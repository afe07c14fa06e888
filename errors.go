package konstruct

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Error codes shared by every layer. The edge (CLI, Slack text, HTTP) maps a
// code to what a person sees; a Go error string never reaches a Slack user.
const (
	ECONFLICT     = "conflict"
	EINTERNAL     = "internal"
	EINVALID      = "invalid"
	ENOTFOUND     = "not_found"
	EUNAUTHORIZED = "unauthorized" // a Slack token or an LLM key was refused
	EUNAVAILABLE  = "unavailable"  // a dependency (Redis, Postgres, LLM, Slack) is down
	ERATELIMIT    = "rate_limited"
	ETIMEOUT      = "timeout"
)

// Error is an application error with a code and a message fit for a person.
type Error struct {
	Code    string
	Message string
	Err     error // optional cause, for logs
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// for any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the person-facing message of the first *Error in err's
// chain, or a generic one.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "Internal error."
}

// FieldError is a setting a package's Validate refuses: Field names it as
// the package's configuration does (the config key's last part, e.g.
// "concurrency"), Reason says what is expected. config maps Field to the
// full key and its environment variable.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + " " + e.Reason }

// SlackError is the Slack edge's account of a Web API call that failed:
// the method, Slack's error code ("msg_too_long", "message_not_found", …;
// "" when Slack was not reached or did not say), and, for a rate limit, how
// long Slack asked to wait. It travels as the cause of an *Error.
type SlackError struct {
	Method     string
	Code       string
	RetryAfter time.Duration // > 0 only for a rate limit (HTTP 429)
	Err        error         // the client's error, for logs
}

func (e *SlackError) Error() string {
	switch {
	case e.RetryAfter > 0:
		return fmt.Sprintf("slack %s: rate limited, retry after %v", e.Method, e.RetryAfter)
	case e.Code != "":
		return fmt.Sprintf("slack %s: %s", e.Method, e.Code)
	case e.Err != nil:
		return fmt.Sprintf("slack %s: %v", e.Method, e.Err)
	}
	return "slack " + e.Method + " failed"
}

func (e *SlackError) Unwrap() error { return e.Err }

// SlackCode returns Slack's error code carried by err, "" when none.
func SlackCode(err error) string {
	var se *SlackError
	if errors.As(err, &se) {
		return se.Code
	}
	return ""
}

// RetryAfter returns how long Slack asked to wait when err is a rate limit.
func RetryAfter(err error) (time.Duration, bool) {
	var se *SlackError
	if errors.As(err, &se) && se.RetryAfter > 0 {
		return se.RetryAfter, true
	}
	return 0, false
}

// ErrNoRetry marks a failure of a queued task that retrying will not fix:
// the queue does not run the task again.
var ErrNoRetry = errors.New("not retried")

// NoRetry wraps err with ErrNoRetry.
func NoRetry(err error) error { return fmt.Errorf("%w (%w)", err, ErrNoRetry) }

// DeferError postpones a queued task without counting a failure: the task
// runs again after After (another delivery holds the reply, or its tenant
// uses its share of the workers).
type DeferError struct {
	After  time.Duration
	Reason string
}

func (e *DeferError) Error() string { return "deferred: " + e.Reason }

// Deferred reports whether err only postpones a task, and for how long.
func Deferred(err error) (time.Duration, bool) {
	var de *DeferError
	if errors.As(err, &de) {
		return de.After, true
	}
	return 0, false
}

var tokenPattern = regexp.MustCompile(`\bx(?:oxb|oxp|oxa|oxe|oxr|app)-[A-Za-z0-9-]+`)

// Redact replaces anything that looks like a Slack token (xoxb-, xoxp-,
// xapp-, …) with a short marker that keeps only the prefix, and the
// credentials of URLs and connection strings (redact.go). Use it on every
// string that could be printed or logged and might carry a secret.
func Redact(s string) string {
	s = tokenPattern.ReplaceAllStringFunc(s, func(tok string) string {
		for i := 0; i < len(tok); i++ {
			if tok[i] == '-' {
				return tok[:i+1] + "[REDACTED]"
			}
		}
		return "[REDACTED]"
	})
	return redactCredentials(s)
}
