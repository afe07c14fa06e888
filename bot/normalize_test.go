package bot

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
)

// callbackJSON builds an event_callback payload around an inner event.
func callbackJSON(t testing.TB, ev map[string]any, botUser string) []byte {
	t.Helper()
	cb := map[string]any{
		"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "enterprise_id": nil,
		"event_id": "Ev1", "event_time": 1700000000, "event": ev,
	}
	if botUser != "" {
		cb["authorizations"] = []map[string]any{{"team_id": "T1", "user_id": botUser, "is_bot": true}}
	}
	b, err := json.Marshal(cb)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNormalize(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name    string
		ev      map[string]any
		botUser string
		want    konstruct.Message
		wantErr error
	}{
		{
			name:    "app_mention strips the bot's own mention only",
			ev:      map[string]any{"type": "app_mention", "user": "U1", "text": "<@UBOT> hi <@U2>  there", "ts": "1.000100", "channel": "C1"},
			botUser: "UBOT",
			want: konstruct.Message{TeamID: "T1", APIAppID: "A1", EventID: "Ev1", EventType: "app_mention",
				ChannelID: "C1", User: "U1", BotUserID: "UBOT", Text: "hi <@U2> there", TS: "1.000100", IsMention: true},
		},
		{
			name:    "mention with a label, in a thread",
			ev:      map[string]any{"type": "app_mention", "user": "U1", "text": "hey <@UBOT|konstruct>, sum up", "ts": "2.0", "thread_ts": "1.0", "channel": "C1"},
			botUser: "UBOT",
			want: konstruct.Message{TeamID: "T1", APIAppID: "A1", EventID: "Ev1", EventType: "app_mention",
				ChannelID: "C1", User: "U1", BotUserID: "UBOT", Text: "hey , sum up", TS: "2.0", ThreadTS: "1.0", IsMention: true},
		},
		{
			name:    "a longer id sharing the prefix stays",
			ev:      map[string]any{"type": "app_mention", "user": "U1", "text": "<@UBOTX> and <@UBOT>", "ts": "2.0", "channel": "C1"},
			botUser: "UBOT",
			want: konstruct.Message{TeamID: "T1", APIAppID: "A1", EventID: "Ev1", EventType: "app_mention",
				ChannelID: "C1", User: "U1", BotUserID: "UBOT", Text: "<@UBOTX> and", TS: "2.0", IsMention: true},
		},
		{
			name: "DM",
			ev:   map[string]any{"type": "message", "channel_type": "im", "user": "U1", "text": "hello", "ts": "3.0", "channel": "D1"},
			want: konstruct.Message{TeamID: "T1", APIAppID: "A1", EventID: "Ev1", EventType: "message",
				ChannelID: "D1", ChannelType: konstruct.ChannelIM, User: "U1", Text: "hello", TS: "3.0", IsDM: true},
		},
		{
			name:    "the bot user comes with every message, mentioned or not",
			ev:      map[string]any{"type": "message", "channel_type": "im", "user": "U1", "text": "hello <@UBOT>", "ts": "3.5", "channel": "D1"},
			botUser: "UBOT",
			want: konstruct.Message{TeamID: "T1", APIAppID: "A1", EventID: "Ev1", EventType: "message",
				ChannelID: "D1", ChannelType: konstruct.ChannelIM, User: "U1", BotUserID: "UBOT", Text: "hello", TS: "3.5", IsDM: true},
		},
		{
			name: "bot message keeps its flags",
			ev:   map[string]any{"type": "message", "subtype": "bot_message", "channel_type": "channel", "bot_id": "B9", "text": "beep", "ts": "4.0", "channel": "C1"},
			want: konstruct.Message{TeamID: "T1", APIAppID: "A1", EventID: "Ev1", EventType: "message",
				ChannelID: "C1", ChannelType: konstruct.ChannelPublic, BotID: "B9", SubType: "bot_message", Text: "beep", TS: "4.0"},
		},
		{
			name: "edit carries the author",
			ev: map[string]any{"type": "message", "subtype": "message_changed", "channel_type": "group", "ts": "5.0", "channel": "G1",
				"message": map[string]any{"user": "U1", "text": "new", "ts": "1.0", "thread_ts": "0.5"}},
			want: konstruct.Message{TeamID: "T1", APIAppID: "A1", EventID: "Ev1", EventType: "message",
				ChannelID: "G1", ChannelType: konstruct.ChannelPrivate, User: "U1", SubType: "message_changed", Text: "new", TS: "5.0", ThreadTS: "0.5"},
		},
		{name: "reaction is not a message", ev: map[string]any{"type": "reaction_added", "user": "U1"}, wantErr: ErrNotMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Normalize(callbackJSON(t, tt.ev, tt.botUser), at)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.want.EventTime = time.Unix(1700000000, 0).UTC()
			tt.want.ReceivedAt = at
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestNormalizeFallbackBotUser(t *testing.T) {
	t.Parallel()
	p := callbackJSON(t, map[string]any{"type": "app_mention", "user": "U1", "text": "<@UBOT> hi", "ts": "1.0", "channel": "C1"}, "")
	m, err := NormalizeFor(p, time.Now(), "UBOT")
	if err != nil || m.Text != "hi" || m.BotUserID != "UBOT" {
		t.Fatalf("NormalizeFor = %q (bot user %q), %v", m.Text, m.BotUserID, err)
	}
	m, _ = Normalize(p, time.Now())
	if m.Text != "<@UBOT> hi" || m.BotUserID != "" {
		t.Fatalf("without a bot user the text must stay and none be set: %q (bot user %q)", m.Text, m.BotUserID)
	}
	// The payload's authorizations win over the fallback.
	p = callbackJSON(t, map[string]any{"type": "app_mention", "user": "U1", "text": "<@UAUTH> hi", "ts": "1.0", "channel": "C1"}, "UAUTH")
	if m, _ = NormalizeFor(p, time.Now(), "UOTHER"); m.BotUserID != "UAUTH" || m.Text != "hi" {
		t.Fatalf("authorizations: bot user %q, text %q; want UAUTH, hi", m.BotUserID, m.Text)
	}
}

// The bot user is the authorization of the event's team, else any bot
// authorization; user (non-bot) authorizations never count.
func TestNormalizeBotUserFromAuthorizations(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		auths []map[string]any
		want  string
	}{
		{"own team first", []map[string]any{
			{"team_id": "T9", "user_id": "UOTHER", "is_bot": true},
			{"team_id": "T1", "user_id": "UBOT", "is_bot": true},
		}, "UBOT"},
		{"another team's bot when none of ours", []map[string]any{{"team_id": "T9", "user_id": "UOTHER", "is_bot": true}}, "UOTHER"},
		{"a user authorization is not the bot", []map[string]any{{"team_id": "T1", "user_id": "UHUMAN", "is_bot": false}}, ""},
		{"none", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := json.Marshal(map[string]any{"type": "event_callback", "team_id": "T1", "event_id": "Ev1", "authorizations": tc.auths,
				"event": map[string]any{"type": "message", "channel_type": "im", "user": "U1", "text": "hi", "ts": "1.0", "channel": "D1"}})
			if err != nil {
				t.Fatal(err)
			}
			m, err := Normalize(p, time.Now())
			if err != nil || m.BotUserID != tc.want {
				t.Errorf("bot user %q (%v), want %q", m.BotUserID, err, tc.want)
			}
		})
	}
}

// app_uninstalled and a tokens_revoked naming the bot token mean the
// workspace is lost; a tokens_revoked of user (oauth) tokens only is not
// ours to act on.
func TestNormalizeRevocation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		ev      map[string]any
		revoked bool
	}{
		{"app_uninstalled", map[string]any{"type": "app_uninstalled"}, true},
		{"bot token revoked", map[string]any{"type": "tokens_revoked", "tokens": map[string]any{"oauth": []string{"U1"}, "bot": []string{"UBOT"}}}, true},
		{"user tokens only", map[string]any{"type": "tokens_revoked", "tokens": map[string]any{"oauth": []string{"U1", "U2"}}}, false},
		{"empty bot list", map[string]any{"type": "tokens_revoked", "tokens": map[string]any{"bot": []string{}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Normalize(callbackJSON(t, tc.ev, "UBOT"), time.Now())
			var rev *RevokedError
			switch {
			case tc.revoked && (!errors.As(err, &rev) || rev.TeamID != "T1" || rev.Reason != tc.ev["type"]):
				t.Errorf("err = %v, want a RevokedError for T1 (%s)", err, tc.ev["type"])
			case !tc.revoked && !errors.Is(err, ErrNotMessage):
				t.Errorf("err = %v, want ErrNotMessage", err)
			}
		})
	}
}

func TestNormalizeInvalid(t *testing.T) {
	t.Parallel()
	for _, p := range []string{
		``, `null`, `[]`, `{"type":"url_verification"}`,
		`{"type":"event_callback","team_id":"T1","event":{"type":"message","channel":"C1"}}`,
		`{"type":"event_callback","event":{"type":"message","channel":"C1","ts":"1.0"}}`,
		`{"type":"event_callback","team_id":"T1","event":"nope"}`,
		`{"type":"event_callback","team_id":"T1","event_time":"x","event":{"type":"message","channel":"C1","ts":"1.0"}}`,
	} {
		if _, err := Normalize([]byte(p), time.Now()); konstruct.ErrorCode(err) != konstruct.EINVALID {
			t.Errorf("Normalize(%s) err = %v, want EINVALID", p, err)
		}
	}
}

func TestStripMention(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"<@U1>":                "",
		"<@U1> <@U1> x":        "x",
		"a <@U1|bob> b":        "a b",
		"<@U1|unterminated":    "<@U1|unterminated",
		"<@U12> stays":         "<@U12> stays",
		"line1\n\n<@U1> line2": "line1\n\n line2",
		"no mention  at all":   "no mention  at all",
	} {
		if got := StripMention(in, "U1"); got != want {
			t.Errorf("StripMention(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzNormalize(f *testing.F) {
	f.Add(callbackJSON(f, map[string]any{"type": "app_mention", "user": "U1", "text": "<@UBOT> hi", "ts": "1.0", "channel": "C1"}, "UBOT"))
	f.Add(callbackJSON(f, map[string]any{"type": "message", "subtype": "message_changed", "ts": "1.0", "channel": "C1", "message": map[string]any{"text": "x"}}, ""))
	f.Add([]byte(`{"type":"event_callback","team_id":"T","event":{"type":"message","channel":"C","ts":"1","text":"<@U|"}}`))
	f.Add([]byte(`{"envelope_id":"e","type":"events_api","payload":{},"retry_attempt":"x"}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := normalize(b, time.Time{}, func(string) string { return "U" })
		if err == nil && (m.TeamID == "" || m.ChannelID == "" || m.TS == "") {
			t.Fatalf("accepted a message without team, channel or ts: %+v", m)
		}
		_, _ = scanFrame(b)
		_ = StripMention(string(b), "U")
	})
}

func BenchmarkNormalize(b *testing.B) {
	p := callbackJSON(b, map[string]any{"type": "app_mention", "user": "U1", "text": "<@UBOT> what changed in the Q3 plan? <@U2> asked", "ts": "1.000100", "thread_ts": "1.0", "channel": "C1"}, "UBOT")
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Normalize(p, now); err != nil {
			b.Fatal(err)
		}
	}
}
