package bot_test

import (
	"testing"
	"time"

	"github.com/konstruct/konstruct/bot"
)

// Payloads shaped like Slack's (and slacksim's) event_callback, blocks and
// authorizations included: normalize runs on every envelope before the ack
// hand-off, so its cost is part of the ack path.
const (
	benchMention = `{"token":"vtok","team_id":"T0BENCH01","enterprise_id":"","context_team_id":"T0BENCH01","context_enterprise_id":null,` +
		`"api_app_id":"A0BENCH01","event":{"type":"app_mention","user":"U0HUMAN01","text":"<@U0BOT0001> how do I rotate the API keys for staging?",` +
		`"ts":"1712345678.000100","event_ts":"1712345678.000100","client_msg_id":"7f0c2a9e-2b1c-4c55-9d1e-0a1b2c3d4e5f","team":"T0BENCH01","channel":"C0GENERAL",` +
		`"blocks":[{"type":"rich_text","block_id":"a1b2c3","elements":[{"type":"rich_text_section","elements":[{"type":"text","text":"<@U0BOT0001> how do I rotate the API keys for staging?"}]}]}]},` +
		`"type":"event_callback","event_id":"Ev0BENCH0001","event_time":1712345678,"authorizations":[{"enterprise_id":null,"team_id":"T0BENCH01","user_id":"U0BOT0001","is_bot":true,"is_enterprise_install":false}],` +
		`"is_ext_shared_channel":false,"event_context":"4-eyJldCI6ImFwcF9tZW50aW9uIiwidGlkIjoiVDBCRU5DSDAxIiwiYWlkIjoiQTBCRU5DSDAxIiwiY2lkIjoiQzBHRU5FUkFMIn0"}`
	benchChatter = `{"token":"vtok","team_id":"T0BENCH01","enterprise_id":"","context_team_id":"T0BENCH01","context_enterprise_id":null,` +
		`"api_app_id":"A0BENCH01","event":{"type":"message","user":"U0HUMAN02","text":"lunch at noon?","ts":"1712345679.000200","event_ts":"1712345679.000200",` +
		`"client_msg_id":"8a0c2a9e-2b1c-4c55-9d1e-0a1b2c3d4e5f","team":"T0BENCH01","channel":"C0GENERAL","channel_type":"channel",` +
		`"blocks":[{"type":"rich_text","block_id":"d4e5f6","elements":[{"type":"rich_text_section","elements":[{"type":"text","text":"lunch at noon?"}]}]}]},` +
		`"type":"event_callback","event_id":"Ev0BENCH0002","event_time":1712345679,"authorizations":[{"enterprise_id":null,"team_id":"T0BENCH01","user_id":"U0BOT0001","is_bot":true,"is_enterprise_install":false}],` +
		`"is_ext_shared_channel":false,"event_context":"4-eyJldCI6Im1lc3NhZ2UiLCJ0aWQiOiJUMEJFTkNIMDEiLCJhaWQiOiJBMEJFTkNIMDEiLCJjaWQiOiJDMEdFTkVSQUwifQ"}`
)

func BenchmarkNormalizeFullPayload(b *testing.B) {
	for _, bc := range []struct{ name, payload string }{
		{"mention", benchMention},
		{"chatter", benchChatter},
	} {
		b.Run(bc.name, func(b *testing.B) {
			payload := []byte(bc.payload)
			at := time.Now()
			if _, err := bot.Normalize(payload, at); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bot.Normalize(payload, at); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
