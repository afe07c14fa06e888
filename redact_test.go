package konstruct_test

import (
	"strings"
	"testing"

	"github.com/konstruct/konstruct"
)

// Passwords in URLs and connection strings never reach a log line or an
// error a person reads, also when the URL is malformed.
func TestRedactCredentials(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{`database.url must name a host, got "postgres:/konstruct_app:hunter2@127.0.0.1/konstruct"`,
			`database.url must name a host, got "postgres:/konstruct_app:[REDACTED]@127.0.0.1/konstruct"`},
		{"postgres://konstruct_app:hunter2@db:5432/k?sslmode=disable", "postgres://konstruct_app:[REDACTED]@db:5432/k?sslmode=disable"},
		{"postgresql:konstruct_app:hunter2@db/k", "postgresql:konstruct_app:[REDACTED]@db/k"},
		{"redis://:hunter2@127.0.0.1:6379/0", "redis://:[REDACTED]@127.0.0.1:6379/0"},
		{"postgres://u:p@ss@host/db next", "postgres://u:[REDACTED]@host/db next"},
		{"http://user:sekrit@llm.internal:8000/v1/: connection refused", "http://user:[REDACTED]@llm.internal:8000/v1/: connection refused"},
		{"host=127.0.0.1 port=5432 user=app password=hunter2 dbname=k", "host=127.0.0.1 port=5432 user=app password=[REDACTED] dbname=k"},
		{"host=db password='hunter 2' dbname=k", "host=db password=[REDACTED] dbname=k"},
		{"postgres://db/k?user=app&password=hunter2&sslmode=require", "postgres://db/k?user=app&password=[REDACTED]&sslmode=require"},
		{"PASSWORD = hunter2", "PASSWORD = [REDACTED]"},
		{"api key sk-proj-abcdefghijklmnop refused", "api key sk-[REDACTED] refused"},
		// Left alone: no credentials.
		{"postgres://konstruct_app@db/k", "postgres://konstruct_app@db/k"},
		{"dial tcp 127.0.0.1:5432: connect: connection refused", "dial tcp 127.0.0.1:5432: connect: connection refused"},
		{"mailto:ops@example.com at 12:30", "mailto:ops@example.com at 12:30"},
		{"task-sk-1 done", "task-sk-1 done"},
	}
	for _, tt := range tests {
		if got := konstruct.Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q)\n = %q\nwant %q", tt.in, got, tt.want)
		}
		if strings.Contains(konstruct.Redact(tt.in), "hunter") || strings.Contains(konstruct.Redact(tt.in), "sekrit") {
			t.Errorf("Redact(%q) leaves the password", tt.in)
		}
	}
}
