package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/konstruct/konstruct/slacksim"
)

// TestOneBadWorkspaceDoesNotStopTheOthers: a workspace whose tokens do not
// decrypt (its row altered) is skipped and reported — in the log, in
// /readyz (ready all the same) and by doctor — while the others connect and
// answer; a bot token Slack refuses on the Web API (token_revoked) marks
// that team alone revoked and closes its sockets, the others answer on.
func TestOneBadWorkspaceDoesNotStopTheOthers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{simOpts: []slacksim.Option{slacksim.WithAckTimeout(time.Second)}})
	_, good := e.seed("good")
	_, bad := e.seed("bad")
	_, gone := e.seed("gone")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, e.pg.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	// One flipped bit: the ciphertext no longer authenticates.
	if _, err := admin.Exec(ctx, `UPDATE workspaces SET bot_token_enc = set_byte(bot_token_enc, 20, get_byte(bot_token_enc, 20) # 1) WHERE team_id = $1`, bad.TeamID); err != nil {
		t.Fatal(err)
	}

	d := startDaemon(t, e.vars, roles{gateway: true, worker: true}, 5*time.Second)
	var rd readiness
	waitFor(t, 15*time.Second, "/readyz 200: two workspaces connected, one skipped", func() bool {
		code, body := d.get(t, "/readyz")
		rd = readiness{}
		if err := json.Unmarshal([]byte(body), &rd); err != nil {
			t.Fatalf("/readyz body %q: %v", body, err)
		}
		connected, skipped := 0, 0
		for _, s := range rd.Workspaces {
			switch {
			case s.TeamID == bad.TeamID && s.Skipped && strings.Contains(s.LastError, "cannot decrypt the tokens of workspace "+bad.TeamID):
				skipped++
			case s.Connected == 2:
				connected++
			}
		}
		return code == 200 && rd.Ready && connected == 2 && skipped == 1
	})
	if e.sim.Connections(bad.AppID) != 0 {
		t.Errorf("the skipped workspace has %d sockets", e.sim.Connections(bad.AppID))
	}
	ts, err := e.sim.Mention(good.TeamID, good.GeneralChannelID, good.UserIDs[0], "still served", "")
	if err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, e.sim, good, good.GeneralChannelID, ts, "still served", 15*time.Second)
	if n := strings.Count(d.logs.String(), "workspace skipped"); n != 1 {
		t.Errorf("%d \"workspace skipped\" log lines, want 1 (logged when first skipped, not at every reconcile):\n%s", n, d.logs.String())
	}

	r := cli(t, e.vars, "doctor")
	rowMatches(t, r.stdout,
		`^workspace `+bad.TeamID+`\s+FAIL\s+cannot decrypt the tokens of workspace `+bad.TeamID+`: .*the daemon skips it and serves the others`)

	// The Web API refuses one team's bot token: that team alone is marked
	// revoked and loses its sockets.
	e.sim.RevokeToken(gone.BotToken)
	ts2, err := e.sim.Mention(gone.TeamID, gone.GeneralChannelID, gone.UserIDs[0], "anyone there?", "")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the refused team marked revoked and disconnected", func() bool {
		list := mustCLI(t, e.vars, "workspace", "list").stdout
		return rowStatus(list, gone.TeamID) == "revoked" && e.sim.Connections(gone.AppID) == 0
	})
	list := mustCLI(t, e.vars, "workspace", "list").stdout
	if rowStatus(list, good.TeamID) != "active" || rowStatus(list, bad.TeamID) != "active" {
		t.Errorf("another team's status changed:\n%s", list)
	}
	if !strings.Contains(d.logs.String(), "slack refused the bot token of a workspace") {
		t.Errorf("no log line names the refused bot token")
	}
	if strings.Contains(d.logs.String(), gone.BotToken) {
		t.Errorf("the log holds the refused token")
	}
	_ = ts2
	ts3, err := e.sim.Mention(good.TeamID, good.GeneralChannelID, good.UserIDs[0], "after the revocation", "")
	if err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, e.sim, good, good.GeneralChannelID, ts3, "after the revocation", 15*time.Second)
}

// rowStatus is the status column of a team's row in `workspace list`.
func rowStatus(list, teamID string) string {
	for line := range strings.SplitSeq(list, "\n") {
		f := strings.Fields(line)
		for i, x := range f {
			if x == teamID {
				for _, s := range f[i:] {
					if s == "active" || s == "revoked" || s == "removed" {
						return s
					}
				}
			}
		}
	}
	return ""
}
