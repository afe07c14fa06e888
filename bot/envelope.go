package bot

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// frameHead is the top level of a Socket Mode frame, read by scanFrame
// without decoding the payload: enough to ack an envelope and route it.
type frameHead struct {
	EnvelopeID   string
	Type         string
	Reason       string // disconnect frames
	Payload      []byte // the raw payload value, a sub-slice of the frame
	RetryAttempt int
}

// scanFrame reads the top-level fields envelope_id, type, reason, payload and
// retry_attempt of a Socket Mode frame with a byte scan: strings are skipped
// with bytes.IndexByte and nested values by counting brackets, so an
// envelope costs a few hundred nanoseconds instead of a full JSON decode.
// It checks the top-level object's structure but not the nested values'
// (normalize validates the payload later, off the read loop). ok is false
// when the frame is not a well-formed top-level object; parseEnvelopeHead
// is then the tolerant fallback.
func scanFrame(b []byte) (h frameHead, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return h, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return h, skipSpace(b, i+1) == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return h, false
		}
		end, esc := scanString(b, i)
		if end < 0 {
			return h, false
		}
		key := b[i+1 : end-1]
		var unq string
		if esc {
			if json.Unmarshal(b[i:end], &unq) != nil {
				return h, false
			}
			key = []byte(unq)
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return h, false
		}
		i = skipSpace(b, i+1)
		start := i
		if i = skipValue(b, i); i < 0 {
			return h, false
		}
		val := b[start:i]
		switch string(key) {
		case "envelope_id":
			h.EnvelopeID = stringValue(val)
		case "type":
			h.Type = stringValue(val)
		case "reason":
			h.Reason = stringValue(val)
		case "payload":
			h.Payload = val
		case "retry_attempt":
			h.RetryAttempt = 0
			if n, err := strconv.Atoi(string(val)); err == nil {
				h.RetryAttempt = n
			}
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return h, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return h, skipSpace(b, i+1) == len(b)
		default:
			return h, false
		}
	}
}

// stringValue is the Go string of a raw JSON string value, "" for any other
// value.
func stringValue(v []byte) string {
	if len(v) < 2 || v[0] != '"' {
		return ""
	}
	inner := v[1 : len(v)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner)
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return ""
	}
	return s
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanString returns the index just past the string starting at b[i] == '"'
// (-1 if unterminated) and whether it holds escapes.
func scanString(b []byte, i int) (end int, escaped bool) {
	j := i + 1
	for {
		q := bytes.IndexByte(b[j:], '"')
		if q < 0 {
			return -1, escaped
		}
		q += j
		// An odd run of backslashes before the quote escapes it.
		n := 0
		for k := q - 1; k >= j && b[k] == '\\'; k-- {
			n++
		}
		if !escaped && bytes.IndexByte(b[j:q], '\\') >= 0 {
			escaped = true
		}
		if n%2 == 0 {
			return q + 1, escaped
		}
		j = q + 1
	}
}

// skipValue returns the index just past the JSON value starting at b[i], or
// -1. Objects and arrays are skipped by bracket depth (strings honoured).
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		end, _ := scanString(b, i)
		return end
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				end, _ := scanString(b, i)
				if end < 0 {
					return -1
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	default:
		// true, false, null or a number: up to the next delimiter.
		j := i
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				if j == i {
					return -1
				}
				return j
			}
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
}
