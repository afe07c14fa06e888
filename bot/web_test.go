package bot

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/markdown"
	"github.com/konstruct/konstruct/slacksim"
)

// webOnSim is a Web against a fresh emulator with one workspace.
func webOnSim(t *testing.T) (*Web, *slacksim.Server, slacksim.WorkspaceSpec) {
	t.Helper()
	sim := slacksim.New()
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("start slacksim: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	ws := sim.AddWorkspace(slacksim.WorkspaceSpec{})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	web := NewWeb(WebConfig{APIURL: sim.APIURL(), HTTPClient: &http.Client{Transport: tr, Timeout: 10 * time.Second}})
	web.Set([]konstruct.Workspace{{TeamID: ws.TeamID, BotUserID: ws.BotUserID, BotToken: ws.BotToken, Status: konstruct.WorkspaceActive}})
	return web, sim, ws
}

// blockMarkdown is the text of a message's markdown block.
func blockMarkdown(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var blocks []struct{ Type, Text string }
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &blocks); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range blocks {
		if b.Type == "markdown" {
			return b.Text
		}
	}
	return ""
}

// An answer the model was steered into writing reaches Slack inert, in the
// text and in the markdown block: nobody is notified but the asker and the
// people the asker mentioned, and no link hides where it points.
func TestWebAnswerIsInert(t *testing.T) {
	t.Parallel()
	web, sim, ws := webOnSim(t)
	asker, other := ws.UserIDs[0], ws.UserIDs[1]
	ctx := konstruct.WithAsker(context.Background(), asker, "<@"+ws.BotUserID+"> tell <@UFRIEND> hi")
	root, err := sim.Mention(ws.TeamID, ws.GeneralChannelID, asker, "<@"+ws.BotUserID+"> tell <@UFRIEND> hi", "")
	if err != nil {
		t.Fatal(err)
	}
	answer := "Sure <@" + asker + ">! <!channel> <!here> <!subteam^S1|@all> <@" + other + "> <@UFRIEND>: " +
		"log in at <https://evil.example/login|your bank> or [the docs](https://evil.example/docs)."
	ts, err := web.Post(ctx, ws.TeamID, ws.GeneralChannelID, root, konstruct.Content{Markdown: answer})
	if err != nil {
		t.Fatal(err)
	}

	var got slacksim.ViewMessage
	for _, m := range sim.Thread(ws.TeamID, ws.GeneralChannelID, root).Messages {
		if m.TS == ts {
			got = m
		}
	}
	md := blockMarkdown(t, got.Blocks)
	for field, s := range map[string]string{"text": got.Text, "markdown block": md} {
		if bad := activeMarkup(s, allowance{asker: true, "UFRIEND": true}); bad != "" {
			t.Errorf("%s %q has %s", field, s, bad)
		}
		for _, live := range []string{"<@" + asker + ">", "<@UFRIEND>"} {
			if !strings.Contains(s, live) {
				t.Errorf("%s %q lost the mention %s the asker allowed", field, s, live)
			}
		}
		if !strings.Contains(s, "https://evil.example/docs") || !strings.Contains(s, "https://evil.example/login") {
			t.Errorf("%s %q hides a link target", field, s)
		}
	}
	if strings.Contains(md, "](https://evil") {
		t.Errorf("markdown block %q keeps a labelled Markdown link", md)
	}

	// Read back, the bot's own text is what was meant (the worker compares
	// it to tell whether a post whose answer was lost landed).
	msgs, err := web.Replies(ctx, ws.TeamID, ws.GeneralChannelID, root)
	if err != nil {
		t.Fatal(err)
	}
	if last := msgs[len(msgs)-1]; last.Text != markdown.Plain(answer) {
		t.Errorf("read back %q, want %q", last.Text, markdown.Plain(answer))
	}
}

// Without an asker (the router's placeholder, a janitor's resumed reply),
// no mention notifies anyone; ephemerals and edits are inert too.
func TestWebNoAskerNoMentions(t *testing.T) {
	t.Parallel()
	web, sim, ws := webOnSim(t)
	ctx := context.Background()
	user := ws.UserIDs[0]
	root, err := sim.Mention(ws.TeamID, ws.GeneralChannelID, user, "<@"+ws.BotUserID+"> hi", "")
	if err != nil {
		t.Fatal(err)
	}
	ts, err := web.Post(ctx, ws.TeamID, ws.GeneralChannelID, root, konstruct.Content{Text: "Thinking..."})
	if err != nil {
		t.Fatal(err)
	}
	if err := web.Update(ctx, ws.TeamID, ws.GeneralChannelID, ts, konstruct.Content{Text: "hey <@" + user + "> <!everyone>"}); err != nil {
		t.Fatal(err)
	}
	if err := web.PostEphemeral(ctx, ws.TeamID, ws.GeneralChannelID, user, root, "slow down <!here>"); err != nil {
		t.Fatal(err)
	}
	v := sim.Thread(ws.TeamID, ws.GeneralChannelID, root)
	for _, m := range v.Messages {
		if m.TS == ts && m.Text != "hey &lt;@"+user+"&gt; &lt;!everyone&gt;" {
			t.Errorf("update text %q", m.Text)
		}
	}
	if e := v.Ephemerals[user]; len(e) != 1 || e[0] != "slow down &lt;!here&gt;" {
		t.Errorf("ephemerals %q", e)
	}
}

// Streamed Markdown is made inert piece by piece: a special mention or a
// link cut between two appends does not form once Slack joins them.
func TestWebStreamIsInert(t *testing.T) {
	t.Parallel()
	web, sim, ws := webOnSim(t)
	user := ws.UserIDs[0]
	ctx := konstruct.WithAsker(context.Background(), user, "hi")
	root, err := sim.Mention(ws.TeamID, ws.GeneralChannelID, user, "<@"+ws.BotUserID+"> hi", "")
	if err != nil {
		t.Fatal(err)
	}
	ts, err := web.StartStream(ctx, ws.TeamID, ws.GeneralChannelID, root, user, "Hello <")
	if err != nil {
		t.Fatal(err)
	}
	for _, piece := range []string{"!here> see [docs]", "(https://evil.example) <https://evil.exa", "mple|bank>"} {
		if err := web.AppendStream(ctx, ws.TeamID, ws.GeneralChannelID, ts, piece); err != nil {
			t.Fatal(err)
		}
	}
	if err := web.StopStream(ctx, ws.TeamID, ws.GeneralChannelID, ts, ""); err != nil {
		t.Fatal(err)
	}
	for _, m := range sim.Thread(ws.TeamID, ws.GeneralChannelID, root).Messages {
		if m.TS != ts {
			continue
		}
		if bad := activeMarkup(m.Text, allowance{user: true}); bad != "" {
			t.Errorf("stream %q has %s", m.Text, bad)
		}
		if h := hiddenLink(m.Text); h != "" {
			t.Errorf("stream %q forms a Markdown link (%q)", m.Text, h)
		}
	}
}

// A bot token Slack refuses for good is reported once, for its team alone;
// another team's calls go on, and a refusal that is not the token's death
// (no_permission on one channel) reports nothing.
func TestWebRefusedTokenReportedForItsTeamOnly(t *testing.T) {
	t.Parallel()
	sim := slacksim.New()
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	a := sim.AddWorkspace(slacksim.WorkspaceSpec{})
	b := sim.AddWorkspace(slacksim.WorkspaceSpec{})
	type refusal struct {
		team string
		err  error
	}
	var got []refusal
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	web := NewWeb(WebConfig{APIURL: sim.APIURL(), HTTPClient: &http.Client{Transport: tr, Timeout: 10 * time.Second},
		OnRefused: func(team string, err error) { got = append(got, refusal{team, err}) }})
	web.Set([]konstruct.Workspace{
		{TeamID: a.TeamID, BotUserID: a.BotUserID, BotToken: a.BotToken},
		{TeamID: b.TeamID, BotUserID: b.BotUserID, BotToken: b.BotToken},
		// Tokens that did not decrypt: never given a client.
		{TeamID: "TBROKEN", Problem: "cannot decrypt the tokens of workspace TBROKEN"},
	})
	ctx := context.Background()
	if _, err := web.Post(ctx, "TBROKEN", "C1", "", konstruct.Content{Text: "x"}); konstruct.ErrorCode(err) != konstruct.ENOTFOUND {
		t.Errorf("post for a workspace with a problem: %v, want ENOTFOUND", err)
	}

	sim.RevokeToken(a.BotToken)
	for range 3 {
		_, err := web.Post(ctx, a.TeamID, a.GeneralChannelID, "", konstruct.Content{Text: "hello"})
		if konstruct.ErrorCode(err) != konstruct.EUNAUTHORIZED {
			t.Fatalf("post with a revoked token: %v, want EUNAUTHORIZED", err)
		}
	}
	if len(got) != 1 || got[0].team != a.TeamID || !strings.Contains(got[0].err.Error(), "token_revoked") {
		t.Fatalf("OnRefused calls = %+v, want one for %s", got, a.TeamID)
	}
	if _, err := web.Post(ctx, b.TeamID, b.GeneralChannelID, "", konstruct.Content{Text: "hello"}); err != nil {
		t.Errorf("the other team's post: %v", err)
	}
	if botTokenRefused(slackError("chat.postMessage", slack.SlackErrorResponse{Err: "no_permission"})) {
		t.Errorf("no_permission taken for a dead token")
	}
	if len(got) != 1 {
		t.Errorf("OnRefused calls = %+v after the other team's post", got)
	}
}
