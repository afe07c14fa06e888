package bot

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// frameHead is the top level of a Socket Mode frame, read by scanFrame
// without decoding the payload: enough to ack an envelope and route it, or
// to greet a new socket.
type frameHead struct {
	EnvelopeID     string
	Type           string
	Reason         string // disconnect frames
	Payload        []byte // the raw payload value, a sub-slice of the frame
	RetryAttempt   int
	AppID          string // hello frames: connection_info.app_id
	NumConnections int    // hello frames
}

// scanFrame is the parser of every Socket Mode frame (hello, disconnect,
// envelopes). It reads the top-level fields envelope_id, type, reason,
// payload, retry_attempt and num_connections, and app_id within
// connection_info, with a byte scan: strings are skipped with
// bytes.IndexByte and nested values by counting brackets, so an envelope
// costs a few hundred nanoseconds instead of a full JSON decode. It checks
// the top-level object's structure but not the nested values' (normalize
// validates the payload later, off the read loop). A field that appears
// twice keeps its last value; one of the wrong JSON type reads as zero.
//
// ok is false when the frame is not a well-formed top-level object. h then
// holds what was read before the fault (the tolerant case): an envelope_id
// that comes first, as Slack sends it, survives a truncated payload or
// trailing junk, for the log.
func scanFrame(b []byte) (h frameHead, ok bool) {
	end := scanObject(b, skipSpace(b, 0), h.set)
	return h, end >= 0 && skipSpace(b, end) == len(b)
}

// set records one top-level member of a frame.
func (h *frameHead) set(key, val []byte) {
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
		h.RetryAttempt = intValue(val)
	case "num_connections":
		h.NumConnections = intValue(val)
	case "connection_info":
		// Only hello frames have it: the same scan, one level down.
		h.AppID = ""
		scanObject(val, 0, func(key, val []byte) {
			if string(key) == "app_id" {
				h.AppID = stringValue(val)
			}
		})
	}
}

// scanObject walks the JSON object starting at b[i] and calls f with each
// member's key (unescaped) and raw value, in order. It returns the index
// just past the object, or -1 when the object is not well formed; f has then
// seen the members before the fault. Nested values are skipped, not
// validated.
func scanObject(b []byte, i int, f func(key, val []byte)) int {
	if i >= len(b) || b[i] != '{' {
		return -1
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return -1
		}
		end, esc := scanString(b, i)
		if end < 0 {
			return -1
		}
		key := b[i+1 : end-1]
		if esc {
			s, ok := unquote(b[i:end])
			if !ok {
				return -1
			}
			key = []byte(s)
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return -1
		}
		i = skipSpace(b, i+1)
		start := i
		if i = skipValue(b, i); i < 0 {
			return -1
		}
		f(key, b[start:i])
		i = skipSpace(b, i)
		if i >= len(b) {
			return -1
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return i + 1
		default:
			return -1
		}
	}
}

// stringValue is the Go string of a raw JSON string value, "" for any other
// value.
func stringValue(v []byte) string {
	s, _ := unquote(v)
	return s
}

// unquote is the Go string of the JSON string literal v; false if v is not
// one.
func unquote(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	inner := v[1 : len(v)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), true
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return "", false
	}
	return s, true
}

// intValue is the int of a raw JSON integer value, 0 for any other value.
func intValue(v []byte) int {
	n, err := strconv.Atoi(string(v))
	if err != nil {
		return 0
	}
	return n
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
