package konstruct

import (
	"errors"
	"fmt"
	"regexp"
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

var tokenPattern = regexp.MustCompile(`\bx(?:oxb|oxp|oxa|oxe|oxr|app)-[A-Za-z0-9-]+`)

// Redact replaces anything that looks like a Slack token (xoxb-, xoxp-,
// xapp-, …) with a short marker that keeps only the prefix. Use it on every
// string that could be printed or logged and might carry a token.
func Redact(s string) string {
	return tokenPattern.ReplaceAllStringFunc(s, func(tok string) string {
		for i := 0; i < len(tok); i++ {
			if tok[i] == '-' {
				return tok[:i+1] + "[REDACTED]"
			}
		}
		return "[REDACTED]"
	})
}
