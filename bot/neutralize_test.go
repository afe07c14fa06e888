package bot

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/konstruct/konstruct"
)

const z = zwsp

func TestNeutralizeText(t *testing.T) {
	t.Parallel()
	allowed := allowance{"UASKER": true, "UBOB": true}
	tests := []struct{ name, in, want string }{
		{"plain", "hello world", "hello world"},
		{"here", "tell <!here> now", "tell &lt;!here&gt; now"},
		{"channel", "<!channel>", "&lt;!channel&gt;"},
		{"everyone", "<!everyone|everyone>", "&lt;!everyone|everyone&gt;"},
		{"subteam", "<!subteam^S123|@oncall> look", "&lt;!subteam^S123|@oncall&gt; look"},
		{"date token", "<!date^1392734382^{date}|Feb 18>", "&lt;!date^1392734382^{date}|Feb 18&gt;"},
		{"other user", "ping <@UCEO>", "ping &lt;@UCEO&gt;"},
		{"grid user", "ping <@W123>", "ping &lt;@W123&gt;"},
		{"asker", "thanks <@UASKER>", "thanks <@UASKER>"},
		{"asker with label keeps the id only", "hi <@UBOB|bob>", "hi <@UBOB>"},
		{"allowed then other", "<@UBOB> and <@UEVE>", "<@UBOB> and &lt;@UEVE&gt;"},
		{"labelled link", "<https://evil.example|your bank>", "&lt;https://evil.example|your bank&gt;"},
		{"bare link", "<https://ok.example>", "&lt;https://ok.example&gt;"},
		{"amp and comparison", "a && b < c > d", "a &amp;&amp; b &lt; c &gt; d"},
		{"entity typed by the model stays visible", "&lt;!here&gt;", "&amp;lt;!here&amp;gt;"},
		{"broken mention", "<@UASKER", "&lt;@UASKER"},
	}
	for _, tt := range tests {
		if got := neutralizeText(tt.in, allowed); got != tt.want {
			t.Errorf("%s: neutralizeText(%q) = %q, want %q", tt.name, tt.in, got, tt.want)
		}
	}
	if got := neutralizeText("<@UASKER>", nil); got != "&lt;@UASKER&gt;" {
		t.Errorf("no allowance: %q", got)
	}
}

func TestNeutralizeMarkdown(t *testing.T) {
	t.Parallel()
	allowed := allowance{"UASKER": true}
	tests := []struct{ name, in, want string }{
		{"plain", "**bold** and _it_", "**bold** and _it_"},
		{"here", "tell <!here> now", "tell <" + z + "!here> now"},
		{"channel in a quote", "> <!channel> read this", "> <" + z + "!channel> read this"},
		{"subteam", "<!subteam^S123>", "<" + z + "!subteam^S123>"},
		{"other user", "ask <@UCEO>", "ask <" + z + "@UCEO>"},
		{"asker", "done, <@UASKER>", "done, <@UASKER>"},
		{"slack link with label", "see <https://evil.example/x|the docs>", "see <" + z + "https://evil.example/x|the docs>"},
		{"channel link with label", "<#C123|general>", "<" + z + "#C123|general>"},
		{"bare autolink stays", "<https://ok.example/a>", "<https://ok.example/a>"},
		{"generics stay", "`Vec<Box<dyn Fn() -> u8>>` and `Array<string | number>`", "`Vec<Box<dyn Fn() -> u8>>` and `Array<string | number>`"},
		{"comparison stays", "if a < b && c > d", "if a < b && c > d"},
		{"ampersand stays", "R&D: https://x.example/?a=1&b=2", "R&D: https://x.example/?a=1&b=2"},
		{"special mention in code is broken too", "```\n<!here>\n```", "```\n<" + z + "!here>\n```"},
		{"markdown link shows its url", "read [the guide](https://docs.example/install) first",
			"read the guide (https://docs.example/install) first"},
		{"deceptive label", "[https://bank.example](https://evil.example)", "https://bank.example (https://evil.example)"},
		{"link whose text is its url", "[https://docs.example/a](https://docs.example/a)", "[https://docs.example/a](https://docs.example/a)"},
		{"link without scheme in text", "[docs.example](https://docs.example/)", "[docs.example](https://docs.example/)"},
		{"image", "![logo](https://cdn.example/l.png)", "logo (https://cdn.example/l.png)"},
		{"title and parens", `[wiki](https://en.example/wiki/Go_(language) "Go")`, "wiki (https://en.example/wiki/Go_(language))"},
		{"angle destination", "[x](<https://a.example/b c>)", "x (https://a.example/b c)"},
		{"link in code span stays", "`arr[i](x)` and [a](https://b.example)", "`arr[i](x)` and a (https://b.example)"},
		{"link in fence stays", "```py\nf[0](y)\n```", "```py\nf[0](y)\n```"},
		{"reference definition shown", "see [docs][1]\n\n[1]: https://evil.example", "see [docs][1]\n\n\\[1]: https://evil.example"},
		{"nested image link", "[![logo](https://cdn.example/l.png)](https://site.example)",
			"logo (https://cdn.example/l.png) (https://site.example)"},
		{"not a link", "a [b] (c) d", "a [b] (c) d"},
	}
	for _, tt := range tests {
		if got := neutralizeMarkdown(tt.in, allowed, false); got != tt.want {
			t.Errorf("%s:\n neutralizeMarkdown(%q)\n = %q\nwant %q", tt.name, tt.in, got, tt.want)
		}
	}
}

// A stream is Markdown that Slack joins piece by piece: a token or a link
// cut between two pieces must not form once they are joined.
func TestNeutralizeMarkdownStreamPieces(t *testing.T) {
	t.Parallel()
	allowed := allowance{"UASKER": true}
	for _, text := range []string{
		"tell <!here> now",
		"ask <@UCEO> please",
		"open <https://evil.example|the docs>",
		"read [the docs](https://evil.example) now",
		"see [docs][1]\n[1]: https://evil.example",
	} {
		for cut := 0; cut <= len(text); cut++ {
			joined := neutralizeMarkdown(text[:cut], allowed, true) + neutralizeMarkdown(text[cut:], allowed, true)
			if bad := activeMarkup(joined, allowed); bad != "" {
				t.Errorf("%q cut at %d: joined %q has %s", text, cut, joined, bad)
			}
			if hidden := hiddenLink(joined); hidden != "" {
				t.Errorf("%q cut at %d: joined %q forms the link %s", text, cut, joined, hidden)
			}
		}
	}
}

func TestAllowanceFor(t *testing.T) {
	t.Parallel()
	if a := allowanceFor(context.Background(), "UBOT"); len(a) != 0 {
		t.Errorf("no asker: %v", a)
	}
	ctx := konstruct.WithAsker(context.Background(), "UASKER", "<@UBOT> please ask <@UBOB|bob> and <@W42>, not <!here>")
	a := allowanceFor(ctx, "UBOT")
	for _, id := range []string{"UASKER", "UBOB", "W42"} {
		if !a.allows(id) {
			t.Errorf("%s not allowed: %v", id, a)
		}
	}
	if a.allows("UBOT") || len(a) != 3 {
		t.Errorf("allowance %v: want the asker and the two people mentioned, not the bot", a)
	}
}

// activeMarkup returns what in s Slack would act on beyond the allowance:
// a special mention, a mention of someone else, or a labelled link to a
// URL, channel or user; "" when none.
func activeMarkup(s string, allowed allowance) string {
	for i := 0; i < len(s); i++ {
		if s[i] != '<' || strings.HasPrefix(s[i+1:], zwsp) {
			continue
		}
		rest := s[i+1:]
		if rest == "" || strings.ContainsRune(" \t\n\r", rune(rest[0])) {
			continue // Slack's tokens start right after the "<"
		}
		if strings.HasPrefix(rest, "!") {
			return "a special mention at " + strconv.Itoa(i)
		}
		if strings.HasPrefix(rest, "@") {
			if id, _, ok := mentionAt(s[i:]); !ok || !allowed.allows(id) {
				return "a mention of someone else at " + strconv.Itoa(i)
			}
			continue
		}
		end := strings.IndexByte(rest, '>')
		if end < 0 {
			continue
		}
		if target, _, ok := strings.Cut(rest[:end], "|"); ok && strings.ContainsAny(target, ":/.#@!") {
			return "a labelled link at " + strconv.Itoa(i)
		}
	}
	return ""
}

var inlineLink = regexp.MustCompile(`\]\s*[(\[:]`)

// hiddenLink returns a Markdown link, reference or definition syntax in s.
func hiddenLink(s string) string { return inlineLink.FindString(s) }

var mdLinkRE = regexp.MustCompile(`!?\[([^\[\]]*)\]\(([^()\s]*)\)`)

func FuzzNeutralize(f *testing.F) {
	for _, seed := range []string{
		"<!here>", "<!channel|channel>", "<!subteam^S1|@team>", "<@UCEO>", "<@UASKER>", "<@UASKER|x>",
		"<https://evil.example|click>", "[click](https://evil.example)", "![i](https://e.example/i.png)",
		"```\n<!here>\n```", "`<@UCEO>`", "a < b > c & d", "<<!here>>", "<@UASKER<!here>>", "<@UASKER|<!here>>",
		"[a](<b|c>)", "[1]: https://x.example\n[t][1]", "&lt;!here&gt;", "<", "<@", "]", "](",
	} {
		f.Add(seed, 3)
	}
	allowed := allowance{"UASKER": true}
	f.Fuzz(func(t *testing.T, s string, cut int) {
		if !utf8.ValidString(s) {
			return
		}
		text := neutralizeText(s, allowed)
		if bad := activeMarkup(text, allowed); bad != "" {
			t.Fatalf("text %q → %q has %s", s, text, bad)
		}
		if strings.ContainsAny(strings.ReplaceAll(text, "<@UASKER>", ""), "<>") {
			t.Fatalf("text %q → %q keeps a raw < or >", s, text)
		}
		if got := decodeEntities(text); !strings.Contains(s, "<@UASKER|") && got != s {
			t.Fatalf("text %q does not read back: %q", s, got)
		}

		md := neutralizeMarkdown(s, allowed, false)
		if bad := activeMarkup(md, allowed); bad != "" {
			t.Fatalf("markdown %q → %q has %s", s, md, bad)
		}
		if !strings.ContainsAny(s, "`~\\<") {
			for _, m := range mdLinkRE.FindAllStringSubmatch(md, -1) {
				if m[2] != "" && !strings.EqualFold(strings.Trim(m[1], "/"), strings.Trim(m[2], "/")) && !sameTargetForTest(m[1], m[2]) {
					t.Fatalf("markdown %q → %q keeps the link %q hiding its target", s, md, m[0])
				}
			}
		}

		if cut < 0 {
			cut = -cut
		}
		cut %= len(s) + 1
		joined := neutralizeMarkdown(s[:cut], allowed, true) + neutralizeMarkdown(s[cut:], allowed, true)
		if bad := activeMarkup(joined, allowed); bad != "" {
			t.Fatalf("stream %q cut at %d → %q has %s", s, cut, joined, bad)
		}
		if h := hiddenLink(joined); h != "" {
			t.Fatalf("stream %q cut at %d → %q has link syntax %q", s, cut, joined, h)
		}
	})
}

func sameTargetForTest(label, dest string) bool {
	norm := func(s string) string {
		s = strings.ToLower(strings.TrimSpace(s))
		for _, p := range []string{"https://", "http://", "mailto:"} {
			s = strings.TrimPrefix(s, p)
		}
		return strings.TrimSuffix(s, "/")
	}
	return norm(label) != "" && norm(label) == norm(dest)
}
