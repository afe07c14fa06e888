package bot

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
)

func TestScanFrame(t *testing.T) {
	for _, tc := range []struct {
		in   string
		ok   bool
		want frameHead
	}{
		{`{"envelope_id":"e1","payload":{"a":[1,{"b":"}"}]},"type":"events_api","accepts_response_payload":false,"retry_attempt":2,"retry_reason":"timeout"}`,
			true, frameHead{EnvelopeID: "e1", Type: "events_api", Payload: []byte(`{"a":[1,{"b":"}"}]}`), RetryAttempt: 2}},
		{` { "type" : "disconnect" , "reason" : "warning", "debug_info": {"host":"h"} } `, true, frameHead{Type: "disconnect", Reason: "warning"}},
		{`{"envelope_id":"e\"2\\","type":"x"}`, true, frameHead{EnvelopeID: `e"2\`, Type: "x"}},
		{`{"envelope_\u0069d":"e3","payload":"s\"}"}`, true, frameHead{EnvelopeID: "e3", Payload: []byte(`"s\"}"`)}},
		{`{"envelope_id":null,"type":7,"retry_attempt":"x","payload":null}`, true, frameHead{Payload: []byte(`null`)}},
		{`{}`, true, frameHead{}},
		{`{"envelope_id":"e4","type":"events_api","payload":{"a":"b"}`, false, frameHead{}},
		{`{"envelope_id":"e5"} x`, false, frameHead{}},
		{`{"envelope_id":"e6",}`, false, frameHead{}},
		{`{"envelope_id" "e7"}`, false, frameHead{}},
		{`{"envelope_id":}`, false, frameHead{}},
		{`{"a":"\\\\"}`, true, frameHead{}},
		{`[]`, false, frameHead{}},
		{``, false, frameHead{}},
		{`{"a":"unterminated}`, false, frameHead{}},
	} {
		got, ok := scanFrame([]byte(tc.in))
		if ok != tc.ok {
			t.Errorf("scanFrame(%s) ok = %v", tc.in, ok)
			continue
		}
		if !ok {
			continue
		}
		if got.EnvelopeID != tc.want.EnvelopeID || got.Type != tc.want.Type || got.Reason != tc.want.Reason ||
			got.RetryAttempt != tc.want.RetryAttempt || !bytes.Equal(got.Payload, tc.want.Payload) {
			t.Errorf("scanFrame(%s) = %+v (payload %s), want %+v", tc.in, got, got.Payload, tc.want)
		}
	}
}

// Whatever encoding/json reads as an object, scanFrame reads the same way.
func FuzzScanFrame(f *testing.F) {
	f.Add([]byte(`{"envelope_id":"e1","payload":{"type":"event_callback","event":{"text":"a \"}\" b"}},"type":"events_api","retry_attempt":1}`))
	f.Add([]byte(`{"type":"disconnect","reason":"refresh_requested"}`))
	f.Add([]byte(`{"envelope_id":"\u00e9","type":"x","payload":[{"a":["]"]}]}`))
	f.Add([]byte(`{"envelope_id":"a","envelope_id":"b"}`))
	f.Add([]byte(`{"retry_attempt":1e3}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := scanFrame(b)
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil || m == nil {
			return // scanFrame may be lenient with what is not JSON
		}
		if !ok {
			t.Fatalf("scanFrame refused valid JSON %q", b)
		}
		str := func(k string) string {
			var s string
			if raw, found := m[k]; found && json.Unmarshal(raw, &s) == nil && raw[0] == '"' {
				return s
			}
			return ""
		}
		if h.EnvelopeID != str("envelope_id") || h.Type != str("type") || h.Reason != str("reason") {
			t.Fatalf("scanFrame(%q) = %+v, encoding/json %q %q %q", b, h, str("envelope_id"), str("type"), str("reason"))
		}
		if !bytes.Equal(h.Payload, m["payload"]) {
			t.Fatalf("payload %q, encoding/json %q", h.Payload, m["payload"])
		}
		want, err := strconv.Atoi(string(m["retry_attempt"]))
		if err != nil {
			want = 0
		}
		if h.RetryAttempt != want {
			t.Fatalf("retry_attempt %d, want %d", h.RetryAttempt, want)
		}
	})
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
			var h envelopeHead
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
