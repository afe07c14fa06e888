// Package markdown is the one place that parses the Markdown the model
// writes: it splits a long answer into message-sized parts at paragraph and
// code-fence boundaries, closes a fence left open in a partial answer, and
// derives the plain text Slack shows in notifications. The worker splits and
// streams with it; the Slack edge (bot) derives the plain text.
package markdown

import (
	"regexp"
	"strings"
	"unicode/utf8"
)

// fence is an open code fence: its marker ("```" or "~~~", possibly longer)
// and the opening line, language included, to reopen it in the next part.
type fence struct {
	marker string
	opener string
}

// fenceLine reports whether line opens or closes a fence: up to three spaces
// of indentation, then three or more backticks or tildes.
func fenceLine(line string) (marker, info string, ok bool) {
	t := strings.TrimRight(line, " \t\r")
	indent := len(t) - len(strings.TrimLeft(t, " "))
	if indent > 3 {
		return "", "", false
	}
	t = t[indent:]
	if len(t) < 3 || (t[0] != '`' && t[0] != '~') {
		return "", "", false
	}
	n := 0
	for n < len(t) && t[n] == t[0] {
		n++
	}
	if n < 3 {
		return "", "", false
	}
	info = strings.TrimSpace(t[n:])
	if t[0] == '`' && strings.Contains(info, "`") {
		return "", "", false
	}
	return t[:n], info, true
}

// closes reports whether line closes the open fence f.
func (f *fence) closes(line string) bool {
	m, info, ok := fenceLine(line)
	return ok && info == "" && m[0] == f.marker[0] && len(m) >= len(f.marker)
}

// openFenceAtEnd returns the fence still open at the end of s, or nil.
func openFenceAtEnd(s string) *fence {
	var open *fence
	for _, line := range strings.Split(s, "\n") {
		if open != nil {
			if open.closes(line) {
				open = nil
			}
			continue
		}
		if m, _, ok := fenceLine(line); ok {
			open = &fence{marker: m, opener: strings.TrimSpace(line)}
		}
	}
	return open
}

// CloseOpenFence closes a code fence left open, so that a partial answer
// shown while it streams renders as code rather than swallowing the rest.
func CloseOpenFence(s string) string {
	if f := openFenceAtEnd(s); f != nil {
		if !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		return s + f.marker
	}
	return s
}

// Split priorities, best first.
const (
	cutParagraph = iota // blank line, or just before/after a fenced block, outside a fence
	cutInFence          // a line boundary inside a fence (closed and reopened)
	cutLine             // a line boundary outside a fence
	cutNone
)

type cutPoint struct {
	pos   int // byte offset of the start of a line in the text
	runes int // runes before pos
	prio  int
	open  *fence // fence open at pos
}

// Split cuts Markdown into parts of at most limit characters,
// preferring paragraph boundaries, then line boundaries inside code blocks
// (the block is closed at the end of one part and reopened, language kept,
// at the start of the next), then any line boundary, then a space, and only
// as a last resort the middle of a word.
func Split(text string, limit int) []string {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil
	}
	if limit < 64 {
		limit = 64
	}
	var parts []string
	prefix := "" // the fence reopened at the start of the next part
	rest := text
	for {
		body := prefix + rest
		if utf8.RuneCountInString(body) <= limit {
			parts = append(parts, body)
			return parts
		}
		part, next, open := cutOnce(body, len(prefix), limit)
		parts = append(parts, part)
		prefix = ""
		if open != nil {
			prefix = open.opener + "\n"
		} else {
			next = strings.TrimLeft(next, "\n")
		}
		rest = next
		if strings.TrimSpace(rest) == "" {
			return parts
		}
	}
}

// cutOnce takes one part of at most limit characters off body, never cutting
// inside its first minPos bytes (a reopened fence). It returns the part, the
// remaining text, and the fence open at the cut (which the part closes).
func cutOnce(body string, minPos, limit int) (part, rest string, open *fence) {
	var best [cutNone]*cutPoint
	var cur *fence
	pos, runes := 0, 0
	// lastFit is the last line start that fits; the fallback cuts inside the
	// line that starts there.
	var lastFit cutPoint
	prevBlank := false
	for pos < len(body) {
		end := strings.IndexByte(body[pos:], '\n')
		lineEnd := len(body)
		if end >= 0 {
			lineEnd = pos + end
		}
		line := body[pos:lineEnd]
		// Is the start of this line a cut point?
		cp := cutPoint{pos: pos, runes: runes, open: cur}
		marker, _, isFence := fenceLine(line)
		switch {
		case cur != nil:
			cp.prio = cutInFence
		case prevBlank || (isFence && marker != ""):
			cp.prio = cutParagraph
		default:
			cp.prio = cutLine
		}
		size := runes
		if cp.open != nil {
			size += 1 + utf8.RuneCountInString(cp.open.marker)
		}
		if size > limit {
			break
		}
		lastFit = cp
		if pos > minPos {
			c := cp
			best[cp.prio] = &c
		}
		// Advance the fence state past this line.
		wasClosing := false
		if cur != nil {
			if cur.closes(line) {
				cur = nil
				wasClosing = true
			}
		} else if m, _, ok := fenceLine(line); ok {
			cur = &fence{marker: m, opener: strings.TrimSpace(line)}
		}
		prevBlank = strings.TrimSpace(line) == "" && cur == nil || wasClosing
		runes += utf8.RuneCountInString(line) + 1
		if lineEnd == len(body) {
			break
		}
		pos = lineEnd + 1
	}
	// Prefer the best kind of cut that keeps the part at least a third full,
	// so a paragraph boundary near the start does not waste a message.
	minRunes := limit / 3
	for prio := 0; prio < cutNone; prio++ {
		if cp := best[prio]; cp != nil && cp.runes >= minRunes {
			return finishCut(body, cp.pos, cp.open)
		}
	}
	for prio := 0; prio < cutNone; prio++ {
		if cp := best[prio]; cp != nil {
			return finishCut(body, cp.pos, cp.open)
		}
	}
	// No line boundary fits: cut inside the line that starts at lastFit, at a
	// space if there is one, keeping room to close a fence open there.
	room := limit - lastFit.runes
	if lastFit.open != nil {
		room -= 1 + utf8.RuneCountInString(lastFit.open.marker)
	}
	start := max(lastFit.pos, minPos)
	cut := RuneOffset(body[start:], max(room-(start-lastFit.pos), 1)) + start
	if sp := strings.LastIndexAny(body[start:cut], " \t"); sp > 0 {
		cut = start + sp + 1
	}
	return finishCut(body, cut, lastFit.open)
}

func finishCut(body string, pos int, open *fence) (string, string, *fence) {
	part := strings.TrimRight(body[:pos], " \t\n")
	if open != nil {
		part += "\n" + open.marker
		return part, body[pos:], open
	}
	return part, body[pos:], nil
}

// RuneOffset returns the byte offset of the n-th rune of s (len(s) if
// s is shorter).
func RuneOffset(s string, n int) int {
	i := 0
	for off := range s {
		if i == n {
			return off
		}
		i++
	}
	return len(s)
}

var (
	mdLink      = regexp.MustCompile(`\[([^\]\n]+)\]\((\S+?)\)`)
	mdHeading   = regexp.MustCompile(`(?m)^\s{0,3}#{1,6}\s+`)
	mdStrong    = regexp.MustCompile(`(\*\*|__)(\S(?:.*?\S)?)(\*\*|__)`)
	mdStrike    = regexp.MustCompile(`~~(\S(?:.*?\S)?)~~`)
	mdInlineTik = regexp.MustCompile("`([^`\n]+)`")
)

// Plain is the notification/fallback text of a Markdown answer: the
// same words without Markdown syntax, so nothing raw shows where Slack
// displays the text instead of the block.
func Plain(md string) string {
	var b strings.Builder
	inFence := (*fence)(nil)
	for _, line := range strings.Split(md, "\n") {
		if inFence != nil {
			if inFence.closes(line) {
				inFence = nil
				continue
			}
			b.WriteString(line)
			b.WriteByte('\n')
			continue
		}
		if m, _, ok := fenceLine(line); ok {
			inFence = &fence{marker: m}
			continue
		}
		line = mdHeading.ReplaceAllString(line, "")
		line = mdLink.ReplaceAllString(line, "$1 ($2)")
		line = mdStrong.ReplaceAllString(line, "$2")
		line = mdStrike.ReplaceAllString(line, "$1")
		line = mdInlineTik.ReplaceAllString(line, "$1")
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return strings.TrimSpace(b.String())
}
