package markdown

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestVisibleLinks(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"no links here", "no links here"},
		{"[guide](https://docs.example/install)", "guide (https://docs.example/install)"},
		{"[**bold** label](https://x.example)", "**bold** label (https://x.example)"},
		{"[https://x.example](https://x.example)", "[https://x.example](https://x.example)"},
		{"![alt](https://cdn.example/a.png)", "alt (https://cdn.example/a.png)"},
		{`[a\]b](https://x.example)`, `a\]b (https://x.example)`},
		{"[`a]`](https://x.example)", "`a]` (https://x.example)"},
		{"`[a](b)` [c](https://d.example)", "`[a](b)` c (https://d.example)"},
		{"~~~\n[a](https://b.example)\n~~~\n[c](https://d.example)", "~~~\n[a](https://b.example)\n~~~\nc (https://d.example)"},
		{"[ref]: https://evil.example", `\[ref]: https://evil.example`},
		{"[a](", "[a]("},
		{"[a](b c)", "[a](b c)"},
	}
	for _, tt := range tests {
		if got := VisibleLinks(tt.in); got != tt.want {
			t.Errorf("VisibleLinks(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// The markdown block holds 12,000 characters: showing targets must not make
// a part that fitted too long.
func TestVisibleLinksNeverLonger(t *testing.T) {
	t.Parallel()
	in := strings.Repeat("- [a long and descriptive label](https://docs.example/some/deep/page?with=query)\n", 100)
	out := VisibleLinks(in)
	if utf8.RuneCountInString(out) > utf8.RuneCountInString(in) {
		t.Fatalf("grew from %d to %d characters", len(in), len(out))
	}
	if !strings.Contains(out, "a long and descriptive label (https://docs.example/some/deep/page?with=query)") {
		t.Fatalf("target not shown: %q", out[:120])
	}
}

// Deeply nested or unclosed brackets (a model looping on "[") stay cheap.
func TestVisibleLinksPathological(t *testing.T) {
	t.Parallel()
	in := strings.Repeat("[", 20000) + "](x)" + strings.Repeat("](", 20000)
	_ = VisibleLinks(in)
}

func TestVisibleLinksDeeplyNested(t *testing.T) {
	t.Parallel()
	in := strings.Repeat("[", 3000) + "a" + strings.Repeat("](https://evil.example)", 3000)
	out := VisibleLinks(in)
	if strings.Contains(out, "](https://evil") && !strings.Contains(out, `\](https://evil`) {
		t.Fatalf("a nested link still hides its target: %q", out[len(out)-200:])
	}
}

func TestVisibleLinksLongDestination(t *testing.T) {
	t.Parallel()
	in := "[click](https://evil.example/" + strings.Repeat("a", 5000) + ")"
	out := VisibleLinks(in)
	if out != in[:0]+`\`+in && !strings.HasPrefix(out, "click (https://evil.example/") {
		t.Fatalf("a long link still hides its target: %q…", out[:60])
	}
}
