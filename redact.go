package konstruct

import (
	"regexp"
	"strings"
)

// Credentials that configuration values carry and errors echo: a URL's
// password (postgres://user:PASSWORD@host, also when the URL is malformed,
// postgres:/user:PASSWORD@host), a libpq keyword connection string's
// password=…, and API keys shaped like OpenAI's (sk-…).
var (
	urlPassword     = regexp.MustCompile(`\b([A-Za-z][A-Za-z0-9+.-]*:/{0,2}[^\s:/@"'<>]*):([^\s"'<>]*)@`)
	keywordPassword = regexp.MustCompile(`(?i)\b(password|passwd|pwd|sslpassword)(\s*=\s*)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s&;'"]+)`)
	apiKey          = regexp.MustCompile(`\bsk-[A-Za-z0-9_-]{8,}`)
)

// redactCredentials hides the credentials redact.go knows the shape of,
// keeping enough around them to tell which URL or setting it was.
func redactCredentials(s string) string {
	if strings.Contains(s, "@") {
		s = urlPassword.ReplaceAllString(s, "$1:[REDACTED]@")
	}
	if strings.Contains(s, "=") {
		s = keywordPassword.ReplaceAllString(s, "$1$2[REDACTED]")
	}
	if strings.Contains(s, "sk-") {
		s = apiKey.ReplaceAllString(s, "sk-[REDACTED]")
	}
	return s
}
