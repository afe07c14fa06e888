package bot

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"testing"
)

func TestScanFrame(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		ok   bool
		want frameHead // for !ok, what the tolerant scan read before the fault
	}{
		{`{"envelope_id":"e1","payload":{"a":[1,{"b":"}"}]},"type":"events_api","accepts_response_payload":false,"retry_attempt":2,"retry_reason":"timeout"}`,
			true, frameHead{EnvelopeID: "e1", Type: "events_api", Payload: []byte(`{"a":[1,{"b":"}"}]}`), RetryAttempt: 2}},
		{` { "type" : "disconnect" , "reason" : "warning", "debug_info": {"host":"h"} } `, true, frameHead{Type: "disconnect", Reason: "warning"}},
		{`{"envelope_id":"e\"2\\","type":"x"}`, true, frameHead{EnvelopeID: `e"2\`, Type: "x"}},
		{`{"envelope_\u0069d":"e3","payload":"s\"}"}`, true, frameHead{EnvelopeID: "e3", Payload: []byte(`"s\"}"`)}},
		{`{"envelope_id":null,"type":7,"retry_attempt":"x","payload":null}`, true, frameHead{Payload: []byte(`null`)}},
		{`{}`, true, frameHead{}},
		{`{"envelope_id":"e4","type":"events_api","payload":{"a":"b"}`, false, frameHead{EnvelopeID: "e4", Type: "events_api", Payload: []byte(`{"a":"b"}`)}},
		{`{"envelope_id":"e5"} x`, false, frameHead{EnvelopeID: "e5"}},
		{`{"envelope_id":"e6",}`, false, frameHead{EnvelopeID: "e6"}},
		{`{"envelope_id" "e7"}`, false, frameHead{}},
		{`{"envelope_id":}`, false, frameHead{}},
		{`{"a":"\\\\"}`, true, frameHead{}},
		{`[]`, false, frameHead{}},
		{``, false, frameHead{}},
		{`{"a":"unterminated}`, false, frameHead{}},

		// hello: the nested connection_info is read with the same scan.
		{`{"type":"hello","num_connections":4,"debug_info":{"host":"applink-1","approximate_connection_time":18060},"connection_info":{"app_id":"A0APP1"}}`,
			true, frameHead{Type: "hello", NumConnections: 4, AppID: "A0APP1"}},
		{`{"connection_info":{"debug":{"app_id":"nested"},"app_\u0069d":"A\u00e9"},"type":"hello"}`, true, frameHead{Type: "hello", AppID: "Aé"}},
		{`{"type":"hello","num_connections":"2","connection_info":"A1"}`, true, frameHead{Type: "hello"}},
		{`{"type":"hello","connection_info":{"app_id":"A1"},"connection_info":{}}`, true, frameHead{Type: "hello"}},
		{`{"type":"hello","connection_info":{"app_id":"A1"}`, false, frameHead{Type: "hello", AppID: "A1"}},
		{`{"type":"disconnect","reason":"too_many_websockets"}`, true, frameHead{Type: "disconnect", Reason: "too_many_websockets"}},

		// Malformed frames with an id: the tolerant case.
		{`{"envelope_id":"m1","type":"events_api","payload":{"type":"event_callback"`, false, frameHead{EnvelopeID: "m1", Type: "events_api"}},
		{`{"envelope_id":"m2","type":"slash_commands"} trailing`, false, frameHead{EnvelopeID: "m2", Type: "slash_commands"}},
		{`{"envelope_id":"m3" "type":"events_api"}`, false, frameHead{EnvelopeID: "m3"}},
		{`{"envelope_id":"m4","retry_attempt":3,"payload":[1,2`, false, frameHead{EnvelopeID: "m4", RetryAttempt: 3}},
		{`{"type":"events_api","payload":{},"envelope_id":"m5"`, false, frameHead{EnvelopeID: "m5", Type: "events_api", Payload: []byte(`{}`)}},
		{`{"payload":{"broken":"},"envelope_id":"m6"}`, false, frameHead{}}, // the id is inside the broken payload's string
		{`{"envelope_id":"m7","type":"events_api","payload":{"a":"\u00"}}`, true, frameHead{EnvelopeID: "m7", Type: "events_api", Payload: []byte(`{"a":"\u00"}`)}},
	} {
		got, ok := scanFrame([]byte(tc.in))
		if ok != tc.ok {
			t.Errorf("scanFrame(%s) ok = %v", tc.in, ok)
		}
		if got.EnvelopeID != tc.want.EnvelopeID || got.Type != tc.want.Type || got.Reason != tc.want.Reason ||
			got.RetryAttempt != tc.want.RetryAttempt || !bytes.Equal(got.Payload, tc.want.Payload) ||
			got.AppID != tc.want.AppID || got.NumConnections != tc.want.NumConnections {
			t.Errorf("scanFrame(%s) = %+v (payload %s), want %+v", tc.in, got, got.Payload, tc.want)
		}
	}
}

// Whatever encoding/json reads as an object, scanFrame reads the same way;
// followed by junk, or cut short, it is refused but still yields the fields
// read before the fault, never an envelope id the frame does not have.
func FuzzScanFrame(f *testing.F) {
	f.Add([]byte(`{"envelope_id":"e1","payload":{"type":"event_callback","event":{"text":"a \"}\" b"}},"type":"events_api","retry_attempt":1}`))
	f.Add([]byte(`{"type":"disconnect","reason":"refresh_requested"}`))
	f.Add([]byte(`{"envelope_id":"\u00e9","type":"x","payload":[{"a":["]"]}]}`))
	f.Add([]byte(`{"envelope_id":"a","envelope_id":"b"}`))
	f.Add([]byte(`{"retry_attempt":1e3}`))
	f.Add([]byte(`{"type":"hello","num_connections":2,"connection_info":{"app_id":"A1"},"debug_info":{"host":"h"}}`))
	f.Add([]byte(`{"envelope_id":"e2","type":"events_api","payload":{"type":"event_callback"`))
	f.Add([]byte(`{"envelope_id":"e3"} junk`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := scanFrame(b)
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil || m == nil {
			return // scanFrame may be lenient with what is not JSON
		}
		if !ok {
			t.Fatalf("scanFrame refused valid JSON %q", b)
		}
		str := func(m map[string]json.RawMessage, k string) string {
			var s string
			if raw, found := m[k]; found && json.Unmarshal(raw, &s) == nil && raw[0] == '"' {
				return s
			}
			return ""
		}
		num := func(k string) int {
			n, err := strconv.Atoi(string(m[k]))
			if err != nil {
				return 0
			}
			return n
		}
		var info map[string]json.RawMessage
		_ = json.Unmarshal(m["connection_info"], &info)
		if h.EnvelopeID != str(m, "envelope_id") || h.Type != str(m, "type") || h.Reason != str(m, "reason") || h.AppID != str(info, "app_id") {
			t.Fatalf("scanFrame(%q) = %+v, encoding/json %q %q %q %q", b, h, str(m, "envelope_id"), str(m, "type"), str(m, "reason"), str(info, "app_id"))
		}
		if !bytes.Equal(h.Payload, m["payload"]) {
			t.Fatalf("payload %q, encoding/json %q", h.Payload, m["payload"])
		}
		if h.RetryAttempt != num("retry_attempt") || h.NumConnections != num("num_connections") {
			t.Fatalf("retry_attempt %d num_connections %d, want %d %d", h.RetryAttempt, h.NumConnections, num("retry_attempt"), num("num_connections"))
		}

		// Tolerant: the whole object read, then junk.
		junk, ok := scanFrame(append(slices.Clip(b), " x"...))
		if ok || junk.EnvelopeID != h.EnvelopeID || junk.Type != h.Type || junk.Reason != h.Reason || junk.AppID != h.AppID {
			t.Fatalf("with junk after it: %+v ok=%v, want %+v", junk, ok, h)
		}
		// Tolerant: cut short anywhere, an id found is one of the frame's.
		ids := envelopeIDs(t, b)
		for n := range len(b) {
			if cut, _ := scanFrame(b[:n]); cut.EnvelopeID != "" && !slices.Contains(ids, cut.EnvelopeID) {
				t.Fatalf("scanFrame(%q) found envelope id %q; the whole frame has %q", b[:n], cut.EnvelopeID, ids)
			}
		}
	})
}

// envelopeIDs lists the string values of every top-level envelope_id member
// of the JSON object b, duplicates included.
func envelopeIDs(t *testing.T, b []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %v %v", tok, err)
	}
	var ids []string
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			t.Fatal(err)
		}
		var s string
		if key == "envelope_id" && val[0] == '"' && json.Unmarshal(val, &s) == nil {
			ids = append(ids, s)
		}
	}
	return ids
}

// The envelope head on the read loop: the byte scan against a struct decode
// with encoding/json (payload kept raw).
func BenchmarkEnvelopeHead(b *testing.B) {
	frame := []byte(`{"envelope_id":"5b1a2c3d-4e5f-6071-8293-a4b5c6d7e8f9","payload":` + benchPayload +
		`,"type":"events_api","accepts_response_payload":false,"retry_attempt":0,"retry_reason":""}`)
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			if h, ok := scanFrame(frame); !ok || h.EnvelopeID == "" {
				b.Fatal("scan")
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			var h struct {
				EnvelopeID   string          `json:"envelope_id"`
				Type         string          `json:"type"`
				Payload      json.RawMessage `json:"payload"`
				RetryAttempt json.Number     `json:"retry_attempt"`
			}
			if err := json.Unmarshal(frame, &h); err != nil || h.EnvelopeID == "" {
				b.Fatal(err)
			}
		}
	})
}

// benchPayload is a Slack-shaped message event_callback (blocks included).
const benchPayload = `{"token":"vtok","team_id":"T0BENCH01","enterprise_id":"","context_team_id":"T0BENCH01","context_enterprise_id":null,` +
	`"api_app_id":"A0BENCH01","event":{"type":"message","user":"U0HUMAN02","text":"lunch at noon? \"the usual\" place {or} [somewhere] else","ts":"1712345679.000200","event_ts":"1712345679.000200",` +
	`"client_msg_id":"8a0c2a9e-2b1c-4c55-9d1e-0a1b2c3d4e5f","team":"T0BENCH01","channel":"C0GENERAL","channel_type":"channel",` +
	`"blocks":[{"type":"rich_text","block_id":"d4e5f6","elements":[{"type":"rich_text_section","elements":[{"type":"text","text":"lunch at noon? \"the usual\" place {or} [somewhere] else"}]}]}]},` +
	`"type":"event_callback","event_id":"Ev0BENCH0002","event_time":1712345679,"authorizations":[{"enterprise_id":null,"team_id":"T0BENCH01","user_id":"U0BOT0001","is_bot":true,"is_enterprise_install":false}],` +
	`"is_ext_shared_channel":false,"event_context":"4-eyJldCI6Im1lc3NhZ2UiLCJ0aWQiOiJUMEJFTkNIMDEiLCJhaWQiOiJBMEJFTkNIMDEiLCJjaWQiOiJDMEdFTkVSQUwifQ"}`
