package markdown

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// checkParts verifies every part fits and that each part's code fences are
// balanced, and returns the parts joined back with their seams removed.
func checkParts(t *testing.T, parts []string, limit int) {
	t.Helper()
	for i, p := range parts {
		if n := utf8.RuneCountInString(p); n > limit {
			t.Errorf("part %d has %d characters, limit %d", i, n, limit)
		}
		if f := openFenceAtEnd(p); f != nil {
			t.Errorf("part %d leaves fence %q open:\n%s", i, f.opener, tail(p))
		}
		if strings.TrimSpace(p) == "" {
			t.Errorf("part %d is empty", i)
		}
	}
}

func tail(s string) string {
	if len(s) > 200 {
		return "…" + s[len(s)-200:]
	}
	return s
}

func TestSplitMarkdownShortIsOnePart(t *testing.T) {
	t.Parallel()
	got := Split("  hello **world**\n", 100)
	if len(got) != 1 || got[0] != "hello **world**" {
		t.Fatalf("got %q", got)
	}
}

func TestSplitMarkdownParagraphs(t *testing.T) {
	t.Parallel()
	var paras []string
	for i := range 40 {
		paras = append(paras, fmt.Sprintf("Paragraph %d. %s", i, strings.TrimSpace(strings.Repeat("word ", 40))))
	}
	text := strings.Join(paras, "\n\n")
	parts := Split(text, 1000)
	checkParts(t, parts, 1000)
	if len(parts) < 8 {
		t.Fatalf("%d parts", len(parts))
	}
	// Cut only between paragraphs: every part starts a paragraph and the
	// parts joined with a blank line give the text back.
	for i, p := range parts {
		if !strings.HasPrefix(p, "Paragraph ") {
			t.Errorf("part %d starts mid-paragraph: %q", i, p[:30])
		}
	}
	if strings.Join(parts, "\n\n") != strings.TrimSpace(text) {
		t.Error("parts joined do not give the text back")
	}
}

func TestSplitMarkdownCodeFenceReopenedWithLanguage(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("Here is the program:\n\n```python\n")
	for i := range 200 {
		fmt.Fprintf(&b, "print('line %03d')\n", i)
	}
	b.WriteString("```\n\nThat's all.")
	parts := Split(b.String(), 1500)
	checkParts(t, parts, 1500)
	if len(parts) < 3 {
		t.Fatalf("%d parts", len(parts))
	}
	for i, p := range parts[1:] {
		if strings.Contains(p, "print(") && !strings.HasPrefix(p, "```python\n") {
			t.Errorf("part %d continues the code without reopening ```python: %q", i+1, p[:20])
		}
	}
	// Every code line is there exactly once, in order.
	var code []string
	for _, p := range parts {
		for _, l := range strings.Split(p, "\n") {
			if strings.HasPrefix(l, "print(") {
				code = append(code, l)
			}
		}
	}
	if len(code) != 200 || code[0] != "print('line 000')" || code[199] != "print('line 199')" {
		t.Errorf("code lines: %d", len(code))
	}
	if !strings.HasSuffix(parts[len(parts)-1], "That's all.") {
		t.Error("last part lost the closing text")
	}
}

func TestSplitMarkdownLongLine(t *testing.T) {
	t.Parallel()
	text := strings.Repeat("abcdefghij ", 500) + strings.Repeat("é", 3000)
	parts := Split(text, 700)
	checkParts(t, parts, 700)
	if got := strings.Join(parts, ""); strings.ReplaceAll(got, " ", "") != strings.ReplaceAll(strings.TrimSpace(text), " ", "") {
		t.Error("characters lost or added")
	}
}

func TestSplitMarkdownTildeAndNestedBackticks(t *testing.T) {
	t.Parallel()
	text := "intro\n\n~~~~md\n" + strings.Repeat("```go\nx := 1\n```\n", 100) + "~~~~\n\nend"
	parts := Split(text, 500)
	checkParts(t, parts, 500)
	for i, p := range parts[1 : len(parts)-1] {
		if !strings.HasPrefix(p, "~~~~md\n") {
			t.Errorf("part %d does not reopen the tilde fence: %q", i+1, p[:10])
		}
	}
}

func TestPlainText(t *testing.T) {
	t.Parallel()
	md := "# Title\n\nSome **bold** and `code` and [a link](https://x.test).\n\n```go\nfmt.Println(\"hi\")\n```\n- item ~~gone~~"
	got := Plain(md)
	want := "Title\n\nSome bold and code and a link (https://x.test).\n\nfmt.Println(\"hi\")\n- item gone"
	if got != want {
		t.Errorf("Plain:\n%q\nwant\n%q", got, want)
	}
}

func TestCloseOpenFence(t *testing.T) {
	t.Parallel()
	if got := CloseOpenFence("a\n```js\nlet x"); got != "a\n```js\nlet x\n```" {
		t.Errorf("got %q", got)
	}
	if got := CloseOpenFence("a\n```\nx\n```"); got != "a\n```\nx\n```" {
		t.Errorf("closed fence changed: %q", got)
	}
}
