package slacksim_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"github.com/konstruct/konstruct/slacksim"
)

func TestAuthTest(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t)
	api := apiClient(t, sim, ws)
	resp, err := api.AuthTestContext(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if resp.UserID != ws.BotUserID || resp.BotID != ws.BotID || resp.TeamID != ws.TeamID || resp.Team != "Acme" || resp.URL == "" {
		t.Errorf("auth.test = %+v", resp)
	}
}

func TestRateLimitedError(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t)
	api := apiClient(t, sim, ws)
	ctx := ctxT(t, 5*time.Second)
	sim.InjectFault("chat.postMessage", slacksim.Fault{Status: 429, RetryAfter: 7, Count: 1})
	_, _, err := api.PostMessageContext(ctx, ws.GeneralChannelID, slack.MsgOptionText("hi", false))
	var rl *slack.RateLimitedError
	if !errors.As(err, &rl) || rl.RetryAfter != 7*time.Second {
		t.Fatalf("err = %v, want RateLimitedError 7s", err)
	}
	// Count 1: the next call goes through.
	if _, _, err := api.PostMessageContext(ctx, ws.GeneralChannelID, slack.MsgOptionText("hi", false)); err != nil {
		t.Fatalf("after fault: %v", err)
	}
	if n := sim.Calls("chat.postMessage"); n != 2 {
		t.Errorf("Calls = %d", n)
	}

	// The real limit: chat.update ~50/min per workspace, burst 20.
	_, ts, err := api.PostMessageContext(ctx, ws.GeneralChannelID, slack.MsgOptionText("placeholder", false))
	if err != nil {
		t.Fatal(err)
	}
	var limited bool
	for i := range 40 {
		_, _, _, err := api.UpdateMessageContext(ctx, ws.GeneralChannelID, ts, slack.MsgOptionText(fmt.Sprint(i), false))
		if errors.As(err, &rl) {
			limited = rl.RetryAfter >= time.Second
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if !limited {
		t.Error("40 chat.update calls in a burst were never rate limited")
	}

	// Other faults: 500 and an ok:false error string.
	sim.InjectFault("auth.test", slacksim.Fault{Status: 500, Count: 1})
	var sce slack.StatusCodeError
	if _, err := api.AuthTestContext(ctx); !errors.As(err, &sce) || sce.Code != 500 {
		t.Errorf("500 fault: %v", err)
	}
	sim.InjectFault("auth.test", slacksim.Fault{Error: "fatal_error", Delay: 50 * time.Millisecond})
	start := time.Now()
	if _, err := api.AuthTestContext(ctx); err == nil || err.Error() != "fatal_error" || time.Since(start) < 50*time.Millisecond {
		t.Errorf("error fault: %v after %v", err, time.Since(start))
	}
	sim.ClearFaults()
	if _, err := api.AuthTestContext(ctx); err != nil {
		t.Errorf("after ClearFaults: %v", err)
	}
}

func TestRateLimitsCanBeDisabled(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t, slacksim.WithRateLimits(false))
	api := apiClient(t, sim, ws)
	ctx := ctxT(t, 5*time.Second)
	for i := range 30 {
		if _, _, err := api.PostMessageContext(ctx, ws.GeneralChannelID, slack.MsgOptionText(fmt.Sprint(i), false)); err != nil {
			t.Fatalf("post %d: %v", i, err)
		}
	}
}

func TestThreadRebuiltThroughReplies(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t)
	api := apiClient(t, sim, ws)
	ctx := ctxT(t, 5*time.Second)
	root, err := sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "question", "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"<@" + ws.BotUserID + "> question"}
	for i := range 3 {
		text := fmt.Sprintf("answer %d", i)
		if _, _, err := api.PostMessageContext(ctx, ws.GeneralChannelID, slack.MsgOptionText(text, false), slack.MsgOptionTS(root)); err != nil {
			t.Fatal(err)
		}
		want = append(want, text)
		text = fmt.Sprintf("follow-up %d", i)
		if _, err := sim.Post(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[1], text, root); err != nil {
			t.Fatal(err)
		}
		want = append(want, text)
	}
	var got []slack.Message
	cursor := ""
	pages := 0
	for {
		msgs, hasMore, next, err := api.GetConversationRepliesContext(ctx, &slack.GetConversationRepliesParameters{
			ChannelID: ws.GeneralChannelID, Timestamp: root, Cursor: cursor, Limit: 3,
		})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		got = append(got, msgs...)
		if !hasMore {
			break
		}
		cursor = next
	}
	if pages != 3 || len(got) != len(want) {
		t.Fatalf("%d pages, %d messages", pages, len(got))
	}
	for i, m := range got {
		if m.Text != want[i] {
			t.Errorf("message %d = %q, want %q", i, m.Text, want[i])
		}
		if m.ThreadTimestamp != root {
			t.Errorf("message %d thread_ts = %q", i, m.ThreadTimestamp)
		}
	}
	if got[0].ReplyCount != 6 || got[1].BotID != ws.BotID || got[1].User != ws.BotUserID || got[2].BotID != "" {
		t.Errorf("root reply_count %d, bot reply %+v", got[0].ReplyCount, got[1].Msg)
	}
	if _, _, _, err := api.GetConversationRepliesContext(ctx, &slack.GetConversationRepliesParameters{
		ChannelID: ws.GeneralChannelID, Timestamp: "1.000001",
	}); err == nil || err.Error() != "thread_not_found" {
		t.Errorf("unknown thread: %v", err)
	}
}

func TestWebAPIErrors(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t)
	api := apiClient(t, sim, ws)
	ctx := ctxT(t, 5*time.Second)
	human, err := sim.Post(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "mine", "")
	if err != nil {
		t.Fatal(err)
	}
	revoked := sim.AddWorkspace(slacksim.WorkspaceSpec{})
	sim.RevokeToken(revoked.BotToken)

	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"update a human message", func() error {
			_, _, _, err := api.UpdateMessageContext(ctx, ws.GeneralChannelID, human, slack.MsgOptionText("edited", false))
			return err
		}, "cant_update_message"},
		{"update unknown ts", func() error {
			_, _, _, err := api.UpdateMessageContext(ctx, ws.GeneralChannelID, "1.000002", slack.MsgOptionText("x", false))
			return err
		}, "message_not_found"},
		{"text too long", func() error {
			_, _, err := api.PostMessageContext(ctx, ws.GeneralChannelID, slack.MsgOptionText(strings.Repeat("x", 40001), false))
			return err
		}, "msg_too_long"},
		{"markdown block too long", func() error {
			_, _, err := api.PostMessageContext(ctx, ws.GeneralChannelID, slack.MsgOptionText("x", false),
				slack.MsgOptionBlocks(slack.NewMarkdownBlock("", strings.Repeat("a", 12001))))
			return err
		}, "invalid_blocks"},
		{"unknown channel", func() error {
			_, _, err := api.PostMessageContext(ctx, "C0NOPE", slack.MsgOptionText("x", false))
			return err
		}, "channel_not_found"},
		{"delete a human message", func() error {
			_, _, err := api.DeleteMessageContext(ctx, ws.GeneralChannelID, human)
			return err
		}, "cant_delete_message"},
		{"bad token", func() error {
			_, err := slack.New("xoxb-nope", slack.OptionAPIURL(sim.APIURL())).AuthTestContext(ctx)
			return err
		}, "invalid_auth"},
		{"no token", func() error {
			_, err := slack.New("", slack.OptionAPIURL(sim.APIURL())).AuthTestContext(ctx)
			return err
		}, "not_authed"},
		{"revoked token", func() error {
			_, err := slack.New(revoked.BotToken, slack.OptionAPIURL(sim.APIURL())).AuthTestContext(ctx)
			return err
		}, "token_revoked"},
		{"app token on a bot method", func() error {
			_, err := slack.New(ws.AppToken, slack.OptionAPIURL(sim.APIURL())).AuthTestContext(ctx)
			return err
		}, "not_allowed_token_type"},
		{"bad app token", func() error {
			_, _, err := slack.New(ws.BotToken, slack.OptionAppLevelToken("xapp-1-nope"), slack.OptionAPIURL(sim.APIURL())).StartSocketModeContext(ctx)
			return err
		}, "invalid_auth"},
		{"stream outside a DM without recipient", func() error {
			_, _, err := api.StartStreamContext(ctx, ws.GeneralChannelID, slack.MsgOptionTS(human))
			return err
		}, "missing_recipient_user_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if err == nil || err.Error() != tt.want {
				t.Errorf("err = %v, want %s", err, tt.want)
			}
		})
	}
}

func TestThreadViewAfterUpdatesStreamsAndDeletes(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t)
	api := apiClient(t, sim, ws)
	ctx := ctxT(t, 5*time.Second)
	var writes []string
	sim.OnBotMessage(func(team, channel, thread, ts, method string, at time.Time) {
		if team == ws.TeamID && thread != "" && !at.IsZero() {
			writes = append(writes, method)
		}
	})
	user := ws.UserIDs[0]
	root, err := sim.Mention(ws.TeamID, ws.GeneralChannelID, user, "explain", "")
	if err != nil {
		t.Fatal(err)
	}
	err = api.SetAssistantThreadsStatusContext(ctx, slack.AssistantThreadsSetStatusParameters{
		ChannelID: ws.GeneralChannelID, ThreadTS: root, Status: "is thinking...",
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := sim.Thread(ws.TeamID, ws.GeneralChannelID, root); v.Status != "is thinking..." {
		t.Errorf("status = %q", v.Status)
	}
	_, placeholder, err := api.PostMessageContext(ctx, ws.GeneralChannelID, slack.MsgOptionText("Thinking...", false), slack.MsgOptionTS(root))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := api.UpdateMessageContext(ctx, ws.GeneralChannelID, placeholder, slack.MsgOptionText("First answer", false)); err != nil {
		t.Fatal(err)
	}
	_, stream, err := api.StartStreamContext(ctx, ws.GeneralChannelID, slack.MsgOptionTS(root),
		slack.MsgOptionRecipientUserID(user), slack.MsgOptionRecipientTeamID(ws.TeamID), slack.MsgOptionMarkdownText("Hello"))
	if err != nil {
		t.Fatal(err)
	}
	if v := sim.Thread(ws.TeamID, ws.GeneralChannelID, root); !v.Messages[2].Streaming {
		t.Errorf("stream not marked streaming: %+v", v.Messages[2])
	}
	if _, _, err := api.AppendStreamContext(ctx, ws.GeneralChannelID, stream, slack.MsgOptionMarkdownText(", world")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := api.StopStreamContext(ctx, ws.GeneralChannelID, stream, slack.MsgOptionMarkdownText("!")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := api.AppendStreamContext(ctx, ws.GeneralChannelID, stream, slack.MsgOptionMarkdownText("late")); err == nil {
		t.Error("append after stop succeeded")
	}
	_, extra, err := api.PostMessageContext(ctx, ws.GeneralChannelID, slack.MsgOptionText("oops", false), slack.MsgOptionTS(root))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := api.DeleteMessageContext(ctx, ws.GeneralChannelID, extra); err != nil {
		t.Fatal(err)
	}
	if _, err := api.PostEphemeralContext(ctx, ws.GeneralChannelID, user, slack.MsgOptionText("too many requests, try again in 5 s", false), slack.MsgOptionTS(root)); err != nil {
		t.Fatal(err)
	}
	if err := api.AddReactionContext(ctx, "eyes", slack.NewRefToMessage(ws.GeneralChannelID, root)); err != nil {
		t.Fatal(err)
	}

	v, err := sim.WaitThread(ctx, ws.TeamID, ws.GeneralChannelID, root, func(v slacksim.ThreadView) bool {
		return len(v.Messages) == 3 && len(v.Ephemerals[user]) == 1
	})
	if err != nil {
		t.Fatalf("%v: %+v", err, v)
	}
	if m := v.Messages[1]; m.Text != "First answer" || !m.IsBot || m.Updates != 1 || m.BotID != ws.BotID {
		t.Errorf("placeholder = %+v", m)
	}
	if m := v.Messages[2]; m.Text != "Hello, world!" || m.Streaming || !m.IsBot {
		t.Errorf("stream = %+v", m)
	}
	if v.Status != "" {
		t.Errorf("status %q not cleared by the reply", v.Status)
	}
	want := []string{"chat.postMessage", "chat.update", "chat.startStream", "chat.appendStream", "chat.stopStream", "chat.postMessage", "chat.postEphemeral"}
	if strings.Join(writes, ",") != strings.Join(want, ",") {
		t.Errorf("OnBotMessage methods = %v", writes)
	}
}

// The Web API also takes JSON bodies with a Bearer token, as Slack does.
func TestJSONBody(t *testing.T) {
	t.Parallel()
	sim, ws := newSim(t)
	root, _ := sim.Post(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "root", "")
	out := form(t, sim, "chat.postMessage", ws.BotToken, url.Values{"channel": {ws.GeneralChannelID}, "text": {"via form"}, "thread_ts": {root}})
	if out["ok"] != true || out["ts"] == "" {
		t.Fatalf("form post = %v", out)
	}
	body, _ := json.Marshal(map[string]any{
		"channel": ws.GeneralChannelID, "thread_ts": root, "text": "via json",
		"blocks": []map[string]any{{"type": "markdown", "text": "**via json**"}},
	})
	req, _ := http.NewRequest(http.MethodPost, sim.APIURL()+"chat.postMessage", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Authorization", "Bearer "+ws.BotToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if out["ok"] != true {
		t.Fatalf("json post = %v", out)
	}
	v := sim.Thread(ws.TeamID, ws.GeneralChannelID, root)
	if len(v.Messages) != 3 || v.Messages[1].Text != "via form" || v.Messages[2].Text != "via json" || !strings.Contains(string(v.Messages[2].Blocks), "markdown") {
		t.Errorf("thread = %+v", v)
	}
}
