package konstruct_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/konstruct/konstruct"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"bot xoxb-1234-5678-abcdEF is set", "bot xoxb-[REDACTED] is set"},
		{"app=xapp-1-A0123-4567-89ab, user xoxp-99-aa", "app=xapp-[REDACTED], user xoxp-[REDACTED]"},
		{`{"token":"xoxb-1-2-3"}`, `{"token":"xoxb-[REDACTED]"}`},
		{"Authorization: Bearer xoxe-1-abc", "Authorization: Bearer xoxe-[REDACTED]"},
		{"no token here, xoxbox- is not one", "no token here, xoxbox- is not one"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := konstruct.Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestErrorCodeAndMessage(t *testing.T) {
	t.Parallel()
	base := konstruct.Errorf(konstruct.ENOTFOUND, "No tenant %q.", "acme")
	wrapped := fmt.Errorf("agent set: %w", base)
	if konstruct.ErrorCode(wrapped) != konstruct.ENOTFOUND || konstruct.ErrorMessage(wrapped) != `No tenant "acme".` {
		t.Errorf("wrapped: %q %q", konstruct.ErrorCode(wrapped), konstruct.ErrorMessage(wrapped))
	}
	plain := errors.New("dial tcp: refused")
	if konstruct.ErrorCode(plain) != konstruct.EINTERNAL || konstruct.ErrorMessage(plain) != "Internal error." {
		t.Errorf("plain: %q %q", konstruct.ErrorCode(plain), konstruct.ErrorMessage(plain))
	}
	if konstruct.ErrorCode(nil) != "" || konstruct.ErrorMessage(nil) != "" {
		t.Error("nil error has a code or message")
	}
	cause := &konstruct.Error{Code: konstruct.EUNAVAILABLE, Message: "Redis is unavailable.", Err: plain}
	if !errors.Is(cause, plain) || !strings.Contains(cause.Error(), "refused") {
		t.Errorf("cause not kept: %v", cause)
	}
}

func TestReplyThread(t *testing.T) {
	t.Parallel()
	top := konstruct.Message{TS: "1.1"}
	if top.ReplyThreadTS() != "1.1" || top.InThread() {
		t.Errorf("top-level post: %q %v", top.ReplyThreadTS(), top.InThread())
	}
	reply := konstruct.Message{TS: "1.2", ThreadTS: "1.1"}
	if reply.ReplyThreadTS() != "1.1" || !reply.InThread() {
		t.Errorf("thread reply: %q %v", reply.ReplyThreadTS(), reply.InThread())
	}
	root := konstruct.Message{TS: "1.1", ThreadTS: "1.1"} // Slack sets thread_ts on a thread's root too
	if root.InThread() {
		t.Error("a thread's root counted as a reply inside it")
	}
}

func TestTSBefore(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"1700000000.000100", "1700000000.000200", true},
		{"1700000000.000200", "1700000000.000100", false},
		{"999999999.9", "1000000000.0", true},
		{"1700000000.1", "1700000000.000200", false},
		{"1700000000.000100", "1700000000.000100", false},
	} {
		if got := konstruct.TSBefore(c.a, c.b); got != c.want {
			t.Errorf("konstruct.TSBefore(%s, %s) = %v", c.a, c.b, got)
		}
	}
}
