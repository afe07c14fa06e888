package markdown

import (
	"regexp"
	"strings"
)

// refDefinition is a link reference definition ("[ref]: https://…"), which
// turns "[text][ref]" and "[ref]" elsewhere into links whose target the
// reader does not see.
var refDefinition = regexp.MustCompile(`^ {0,3}\[[^\]]+\]:`)

// VisibleLinks rewrites Markdown so that no link hides where it points:
// an inline link or image whose text is not its own URL, "[label](url)",
// becomes "label (url)" (the URL shown, and linked by Slack as a bare URL);
// a link whose text is its URL stays as it is; reference definitions are
// escaped, so that they show as text and the references stay plain text.
// Code (fenced blocks and inline code spans) is left untouched. The result
// is never longer than md, but for one backslash per reference definition
// (and per "[" of a would-be link longer than a few thousand characters,
// which is escaped rather than parsed).
func VisibleLinks(md string) string {
	if !strings.Contains(md, "](") && !strings.Contains(md, "]:") {
		return md
	}
	var b strings.Builder
	b.Grow(len(md))
	var open *fence
	lines := strings.Split(md, "\n")
	for i, line := range lines {
		if i > 0 {
			b.WriteByte('\n')
		}
		switch {
		case open != nil:
			if open.closes(line) {
				open = nil
			}
			b.WriteString(line)
			continue
		default:
			if m, _, ok := fenceLine(line); ok {
				open = &fence{marker: m}
				b.WriteString(line)
				continue
			}
		}
		if loc := refDefinition.FindStringIndex(line); loc != nil {
			j := strings.IndexByte(line, '[')
			b.WriteString(line[:j])
			b.WriteByte('\\')
			line = line[j:]
		}
		b.WriteString(inlineLinks(line, 0))
	}
	return b.String()
}

// maxLinkDepth bounds links nested in link text ([![img](src)](href) is
// depth 1): beyond it, brackets are escaped and nothing deeper links.
const maxLinkDepth = 4

// inlineLinks rewrites the inline links of one line outside code spans;
// depth counts the links s is the text of.
func inlineLinks(s string, depth int) string {
	if !strings.Contains(s, "](") {
		return s
	}
	if depth > maxLinkDepth {
		return strings.NewReplacer("[", `\[`, "]", `\]`).Replace(s)
	}
	closing := matchBrackets(s)
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			b.WriteString(s[i : i+2])
			i += 2
		case c == '`':
			end := codeSpanEnd(s, i)
			b.WriteString(s[i:end])
			i = end
		case c == '[' || (c == '!' && i+1 < len(s) && s[i+1] == '['):
			start := i
			if c == '!' {
				i++
			}
			label, dest, next, ok := parseLink(s, i, closing[i])
			if !ok {
				if next < 0 {
					// Too long to tell: escaped, it links nothing.
					b.WriteString(s[start:i])
					b.WriteByte('\\')
				}
				b.WriteString(s[i : i+1])
				i++
				continue
			}
			if dest == "" || sameTarget(label, dest) {
				b.WriteString(s[start:next])
			} else {
				b.WriteString(inlineLinks(label, depth+1))
				b.WriteString(" (")
				b.WriteString(dest)
				b.WriteByte(')')
			}
			i = next
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}

// codeSpanEnd returns the index after the code span that starts at s[i]
// (a run of backticks), or after the run when nothing closes it.
func codeSpanEnd(s string, i int) int {
	n := runLen(s, i, '`')
	if end := closingRun(s, i+n, n); end >= 0 {
		return end + n
	}
	return i + n
}

// matchBrackets maps the index of each "[" outside code spans to the index
// of the "]" that closes it (0 when none), in one pass.
func matchBrackets(s string) []int {
	closing := make([]int, len(s))
	var open []int
	for i := 0; i < len(s); {
		switch s[i] {
		case '\\':
			i += 2
			continue
		case '`':
			i = codeSpanEnd(s, i)
			continue
		case '[':
			open = append(open, i)
		case ']':
			if n := len(open); n > 0 {
				closing[open[n-1]] = i
				open = open[:n-1]
			}
		}
		i++
	}
	return closing
}

// runLen counts the bytes equal to c from s[i].
func runLen(s string, i int, c byte) int {
	n := 0
	for i+n < len(s) && s[i+n] == c {
		n++
	}
	return n
}

// closingRun finds the next run of exactly n backticks at or after i.
func closingRun(s string, i, n int) int {
	for i < len(s) {
		j := strings.IndexByte(s[i:], '`')
		if j < 0 {
			return -1
		}
		j += i
		m := runLen(s, j, '`')
		if m == n {
			return j
		}
		i = j + m
	}
	return -1
}

// maxDestination bounds the destination and title of a link parseLink
// looks at, so that a line of unclosed links costs linear time.
const maxDestination = 2048

// parseLink parses an inline link "[label](dest "title")" at s[i] == '[',
// whose "]" is at j (0 when unclosed), and returns the label, the
// destination and the index after the link. next < 0 when the destination
// or title runs longer than maxDestination.
func parseLink(s string, i, j int) (label, dest string, next int, ok bool) {
	label, dest, next, ok = parseLinkIn(s[:min(len(s), j+2+2*maxDestination+8)], i, j)
	if !ok && j > i && j+2+2*maxDestination+8 < len(s) {
		next = -1 // the link may go on beyond what was looked at
	}
	return label, dest, next, ok
}

func parseLinkIn(s string, i, j int) (label, dest string, next int, ok bool) {
	if j <= i || j+1 >= len(s) || s[j+1] != '(' {
		return "", "", 0, false
	}
	label = s[i+1 : j]
	k := skipSpaces(s, j+2)
	if k < len(s) && s[k] == '<' {
		end := strings.IndexByte(s[k+1:], '>')
		if end < 0 {
			return "", "", 0, false
		}
		dest = s[k+1 : k+1+end]
		k += end + 2
	} else {
		start, parens := k, 0
	scan:
		for ; k < len(s); k++ {
			switch s[k] {
			case '\\':
				k++
			case ' ', '\t':
				break scan
			case '(':
				parens++
			case ')':
				if parens == 0 {
					break scan
				}
				parens--
			}
		}
		k = min(k, len(s))
		dest = s[start:k]
	}
	k = skipSpaces(s, k)
	if k < len(s) && (s[k] == '"' || s[k] == '\'' || s[k] == '(') {
		closer := s[k]
		if closer == '(' {
			closer = ')'
		}
		end := strings.IndexByte(s[k+1:], closer)
		if end < 0 {
			return "", "", 0, false
		}
		k = skipSpaces(s, k+end+2)
	}
	if k >= len(s) || s[k] != ')' {
		return "", "", 0, false
	}
	return label, dest, k + 1, true
}

func skipSpaces(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

// sameTarget reports whether a link's text already shows its destination
// (scheme, a trailing slash and letter case aside).
func sameTarget(label, dest string) bool {
	norm := func(s string) string {
		s = strings.ToLower(strings.TrimSpace(s))
		s = strings.Trim(s, "`<>")
		for _, p := range []string{"https://", "http://", "mailto:"} {
			s = strings.TrimPrefix(s, p)
		}
		return strings.TrimSuffix(s, "/")
	}
	return norm(label) != "" && norm(label) == norm(dest)
}
