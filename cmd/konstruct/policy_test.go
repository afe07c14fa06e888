package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/llm/llmfake"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/router"
	"github.com/konstruct/konstruct/slacksim"
)

func showPolicy(t *testing.T, vars map[string]string, tenant string) policyView {
	t.Helper()
	var v policyView
	out := mustCLI(t, vars, "policy", "show", "--tenant", tenant, "--json").stdout
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("policy show --json printed %q: %v", out, err)
	}
	return v
}

// TestPolicyAndBudgetCLI: policy show starts at today's behaviour; policy
// set changes only the flags given (an empty list clears, all resets);
// budget set sets the budgets; bad values are one clear line each.
func TestPolicyAndBudgetCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	id := strings.TrimSpace(mustCLI(t, e.vars, "tenant", "create", "--name", "Acme", "--slug", "acme").stdout)

	v := showPolicy(t, e.vars, "acme")
	want := policyView{TenantID: id, Tenant: "acme", Channels: "all", Users: "all", DMs: "on", FollowThreads: "auto", FollowTTL: "30m"}
	if v != want {
		t.Fatalf("defaults: %+v, want %+v", v, want)
	}
	table := mustCLI(t, e.vars, "policy", "show", "--tenant", id).stdout
	for _, w := range []string{"channels", "all", "follow-ttl", "30m (threads.engaged_ttl)", "tokens-per-day", "none", "never (defaults)"} {
		if !strings.Contains(table, w) {
			t.Errorf("policy show does not say %q:\n%s", w, table)
		}
	}

	out := mustCLI(t, e.vars, "policy", "set", "--tenant", "acme", "--channels", "C111,C222", "--deny-channels", "C222", "--dms", "off").stdout
	if !strings.Contains(out, "C111,C222") {
		t.Errorf("policy set prints the policy in force:\n%s", out)
	}
	mustCLI(t, e.vars, "policy", "set", "--tenant", "acme", "--users", "U1, U2,U1", "--follow-threads", "mention", "--follow-ttl", "2h")
	v = showPolicy(t, e.vars, "acme")
	want = policyView{TenantID: id, Tenant: "acme", Channels: "C111,C222", DenyChannels: "C222", Users: "U1,U2", DMs: "off",
		FollowThreads: "mention", FollowTTL: "2h", UpdatedAt: v.UpdatedAt}
	if v != want || v.UpdatedAt == nil {
		t.Fatalf("after two patches: %+v, want %+v", v, want)
	}
	// Clear the deny list, back to every channel and the default TTL; the rest stays.
	mustCLI(t, e.vars, "policy", "set", "--tenant", "acme", "--deny-channels", "", "--channels", "all", "--follow-ttl", "0")
	v = showPolicy(t, e.vars, "acme")
	if v.Channels != "all" || v.DenyChannels != "" || v.Users != "U1,U2" || v.DMs != "off" || v.FollowThreads != "mention" || v.FollowTTL != "30m" {
		t.Fatalf("after clearing: %+v", v)
	}

	mustCLI(t, e.vars, "budget", "set", "--tenant", "acme", "--tokens-per-day", "50000")
	mustCLI(t, e.vars, "budget", "set", "--tenant", "acme", "--tokens-per-month", "1000000")
	if v = showPolicy(t, e.vars, "acme"); v.TokensPerDay != 50000 || v.TokensPerMonth != 1000000 || v.Users != "U1,U2" {
		t.Fatalf("after budget set: %+v", v)
	}
	mustCLI(t, e.vars, "budget", "set", "--tenant", "acme", "--tokens-per-day", "0")
	if v = showPolicy(t, e.vars, "acme"); v.TokensPerDay != 0 || v.TokensPerMonth != 1000000 {
		t.Fatalf("--tokens-per-day 0 (none): %+v", v)
	}

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"nothing to change", []string{"policy", "set", "--tenant", "acme"}, []string{"nothing to change", "--channels"}},
		{"channel name", []string{"policy", "set", "--tenant", "acme", "--channels", "#general"}, []string{`"#general"`, "channel id"}},
		{"deny all", []string{"policy", "set", "--tenant", "acme", "--deny-channels", "all"}, []string{"--deny-channels", `"all"`}},
		{"user name", []string{"policy", "set", "--tenant", "acme", "--users", "alice"}, []string{"--users", `"alice"`}},
		{"dms", []string{"policy", "set", "--tenant", "acme", "--dms", "maybe"}, []string{"--dms", "on or off"}},
		{"follow", []string{"policy", "set", "--tenant", "acme", "--follow-threads", "always"}, []string{"auto, mention or off"}},
		{"ttl", []string{"policy", "set", "--tenant", "acme", "--follow-ttl", "10s"}, []string{"--follow-ttl", "1m"}},
		{"no tenant", []string{"policy", "show"}, []string{"--tenant is required"}},
		{"unknown tenant", []string{"policy", "show", "--tenant", "nope"}, []string{`"nope"`}},
		{"negative budget", []string{"budget", "set", "--tenant", "acme", "--tokens-per-day", "-1"}, []string{"--tokens-per-day", "0"}},
		{"no budget", []string{"budget", "set", "--tenant", "acme"}, []string{"nothing to change"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := failCLI(t, e.vars, tc.want, tc.args...); r.stdout != "" {
				t.Errorf("stdout %q on failure", r.stdout)
			}
		})
	}
}

// TestUsageCLI: usage's figures under DESIGN.md's names in JSON, a header
// row in CSV, a row per day, channel or user with --by, and --since's Nd
// and Nh windows.
func TestUsageCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	id := strings.TrimSpace(mustCLI(t, e.vars, "tenant", "create", "--name", "Acme", "--slug", "acme").stdout)
	st := testenv.OpenStore(t, e.pg.RuntimeURL, nil)
	ctx := context.Background()
	now := time.Now().UTC()
	for _, r := range []struct {
		ev, outcome, channel, user string
		ttft, answer               time.Duration
		age                        time.Duration
	}{
		{"Ev1", konstruct.OutcomeAnswered, "C1", "U1", 100 * time.Millisecond, time.Second, 2 * time.Hour},
		{"Ev2", konstruct.OutcomeAnswered, "C2", "U2", 300 * time.Millisecond, 3 * time.Second, 3 * 24 * time.Hour},
		{"Ev3", konstruct.OutcomeError, "C1", "U1", 0, 0, time.Hour},
		{"Ev4", konstruct.OutcomeRefused, "C1", "U2", 0, 0, time.Hour},
	} {
		if err := st.RecordReply(ctx, konstruct.Reply{TenantID: id, TeamID: "T1", ChannelID: r.channel, EventID: r.ev, Outcome: r.outcome,
			PromptTokens: 10, CompletionTokens: 5, TimeToFirstToken: r.ttft, AnswerTime: r.answer, UserID: r.user, PostTS: r.ev + ".1"}); err != nil {
			t.Fatal(err)
		}
		adminQuery(t, e.pg.AdminURL, "UPDATE replies SET created_at = $1 WHERE event_id = $2", now.Add(-r.age), r.ev).Close()
	}
	if _, err := st.RecordVote(ctx, konstruct.Vote{Post: konstruct.Post{TenantID: id, TeamID: "T1", ChannelID: "C1", TS: "Ev1.1"}, User: "U9", Up: true}); err != nil {
		t.Fatal(err)
	}

	var doc map[string]any
	out := mustCLI(t, e.vars, "usage", "--tenant", "acme", "--format", "json").stdout
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("usage --format json printed %q: %v", out, err)
	}
	for k, want := range map[string]any{"questions": 4.0, "answers": 2.0, "errors": 1.0, "tokens_in": 40.0, "tokens_out": 20.0,
		"ttft_p50_ms": 200.0, "ttft_p95_ms": 290.0, "answer_p50_ms": 2000.0, "answer_p95_ms": 2900.0, "feedback_up": 1.0, "feedback_down": 0.0,
		"tenant": "acme", "tenant_id": id} {
		if doc[k] != want {
			t.Errorf("%s = %v, want %v (%s)", k, doc[k], want, out)
		}
	}
	if _, ok := doc["rows"]; ok {
		t.Errorf("rows without --by: %s", out)
	}

	out = mustCLI(t, e.vars, "usage", "--tenant", id, "--since", "1d", "--by", "user", "--format", "json").stdout
	var byUser struct {
		Questions int              `json:"questions"`
		Rows      []map[string]any `json:"rows"`
	}
	if err := json.Unmarshal([]byte(out), &byUser); err != nil {
		t.Fatal(err)
	}
	if byUser.Questions != 3 || len(byUser.Rows) != 2 || byUser.Rows[0]["user"] != "U1" || byUser.Rows[0]["questions"] != 2.0 ||
		byUser.Rows[1]["user"] != "U2" || byUser.Rows[1]["ttft_p50_ms"] != nil {
		t.Fatalf("--since 1d --by user: %s", out)
	}

	out = mustCLI(t, e.vars, "usage", "--tenant", "acme", "--by", "channel", "--format", "csv").stdout
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	header := "channel,questions,answers,errors,tokens_in,tokens_out,ttft_p50_ms,ttft_p95_ms,answer_p50_ms,answer_p95_ms,feedback_up,feedback_down"
	if len(recs) != 3 || strings.Join(recs[0], ",") != header || recs[1][0] != "C1" || recs[1][1] != "3" || recs[2][0] != "C2" || recs[2][7] != "300" {
		t.Fatalf("csv:\n%s", out)
	}
	out = mustCLI(t, e.vars, "usage", "--tenant", "acme", "--since", "90h", "--by", "day").stdout
	if !strings.Contains(out, "QUESTIONS") || !strings.Contains(out, "TOTAL") || !strings.Contains(out, now.Format("2006-01-02")) {
		t.Errorf("table:\n%s", out)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--since", "30"}, []string{"--since", "Nd or Nh"}},
		{[]string{"--since", "2w"}, []string{"--since"}},
		{[]string{"--by", "week"}, []string{"--by", "day, channel or user"}},
		{[]string{"--format", "xml"}, []string{"--format", "table, csv or json"}},
	} {
		failCLI(t, e.vars, tc.want, append([]string{"usage", "--tenant", "acme"}, tc.args...)...)
	}
}

// metricValue reads one series of a daemon's /metrics (0 when absent).
func metricValue(t *testing.T, addr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	f, _ := strconv.ParseFloat(string(m[1]), 64)
	return f
}

// startDaemonRun runs `konstruct run` with its HTTP server on a known
// address, and waits until it answers.
func startDaemonRun(t *testing.T, e *env) string {
	t.Helper()
	addr := freeAddr(t)
	startRun(t, e.with("KONSTRUCT_HTTP_ADDR", addr, "KONSTRUCT_LOG_LEVEL", "info"), "run")
	waitFor(t, 10*time.Second, "the daemon's HTTP server", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
	return addr
}

// TestPolicyChangeReachesRunningDaemon: `policy set` acts on a running
// daemon within 10 s of the command's exit, without a restart: DMs turned
// off get the note; a denied channel gets nothing while others are
// answered.
func TestPolicyChangeReachesRunningDaemon(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	_, ws := e.seed("live")
	addr := startDaemonRun(t, e)
	waitFor(t, 10*time.Second, "sockets", func() bool { return e.sim.Connections(ws.AppID) > 0 })
	user := ws.UserIDs[0]
	dmChannel := e.sim.DMChannel(ws.TeamID, user)
	ts, err := e.sim.DM(ws.TeamID, user, "hello before", "")
	if err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, e.sim, ws, dmChannel, ts, "hello before", 15*time.Second) // the daemon has read the policy

	mustCLI(t, e.vars, "policy", "set", "--tenant", "live", "--dms", "off")
	set := time.Now()
	noted := func(ts string) bool {
		for _, m := range e.sim.Thread(ws.TeamID, dmChannel, ts).BotReplies() {
			if m.Text == router.TextNotEnabled {
				return true
			}
		}
		return false
	}
	var tries []string
	for {
		ts, err := e.sim.DM(ws.TeamID, user, "hello after", "")
		if err != nil {
			t.Fatal(err)
		}
		tries = append(tries, ts)
		waitFor(t, 15*time.Second, "a reply to the DM", func() bool { return len(e.sim.Thread(ws.TeamID, dmChannel, ts).BotReplies()) > 0 })
		if noted(ts) {
			break
		}
		if time.Since(set) > 10*time.Second {
			t.Fatalf("DMs still answered %v after policy set", time.Since(set))
		}
	}
	t.Logf("policy applied %v after the command (%d DMs)", time.Since(set).Round(time.Millisecond), len(tries))

	// The note is sent once a day: another DM gets nothing.
	ts, _ = e.sim.DM(ws.TeamID, user, "and again", "")
	waitFor(t, 10*time.Second, "the DM routed", func() bool {
		return metricValue(t, addr, `konstruct_route_outcomes_total{outcome="outside_policy"}`) >= 2
	})
	if r := e.sim.Thread(ws.TeamID, dmChannel, ts).BotReplies(); len(r) != 0 {
		t.Errorf("a second note the same day: %+v", r)
	}

	// Deny #general: nothing there (not even a placeholder); another channel is answered.
	mustCLI(t, e.vars, "policy", "set", "--tenant", "live", "--dms", "on", "--deny-channels", ws.GeneralChannelID)
	set = time.Now()
	before := metricValue(t, addr, `konstruct_route_outcomes_total{outcome="outside_policy"}`)
	for time.Since(set) < 10*time.Second {
		denied, _ := e.sim.Mention(ws.TeamID, ws.GeneralChannelID, user, "in general", "")
		waitFor(t, 10*time.Second, "the mention routed", func() bool {
			return metricValue(t, addr, `konstruct_route_outcomes_total{outcome="outside_policy"}`) > before ||
				len(e.sim.Thread(ws.TeamID, ws.GeneralChannelID, denied).BotReplies()) > 0
		})
		if metricValue(t, addr, `konstruct_route_outcomes_total{outcome="outside_policy"}`) > before {
			if v := e.sim.Thread(ws.TeamID, ws.GeneralChannelID, denied); len(v.BotReplies()) != 0 || len(v.Ephemerals) != 0 {
				t.Errorf("a denied channel got %+v", v)
			}
			break
		}
	}
	if metricValue(t, addr, `konstruct_route_outcomes_total{outcome="outside_policy"}`) == before {
		t.Fatal("the denied channel was still answered 10 s after policy set")
	}
	ts, _ = e.sim.Mention(ws.TeamID, "C0OTHER01", user, "elsewhere", "")
	waitAnswer(t, e.sim, ws, "C0OTHER01", ts, "elsewhere", 15*time.Second)
}

// TestStopFeedbackAndForeignClicks: over Slack's sockets, the asker's
// Stop ends a streaming answer within 5 s, the partial answer stays marked
// as stopped and stops changing; 👍/👎 are recorded one per person and
// changeable; a click from a person of another tenant's workspace is
// ignored and touches no tenant's data.
func TestStopFeedbackAndForeignClicks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{llm: func(r llmfake.ChatRequest) llmfake.Reply {
		if strings.Contains(r.LastUser(), "forever") {
			return llmfake.Reply{Text: "Here is the start of a very long answer that never ends", HangAfter: 8}
		}
		return llmfake.Reply{Text: "Answer: " + r.LastUser()}
	}})
	a, wsA := e.seed("alpha")
	b, wsB := e.seed("beta")
	addr := startDaemonRun(t, e)
	waitFor(t, 10*time.Second, "sockets", func() bool { return e.sim.Connections(wsA.AppID) > 0 && e.sim.Connections(wsB.AppID) > 0 })
	asker, other := wsA.UserIDs[0], wsA.UserIDs[1]

	root, err := e.sim.Mention(wsA.TeamID, wsA.GeneralChannelID, asker, "go on forever", "")
	if err != nil {
		t.Fatal(err)
	}
	var streaming slacksim.ViewMessage
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = e.sim.WaitThread(ctx, wsA.TeamID, wsA.GeneralChannelID, root, func(v slacksim.ThreadView) bool {
		for _, m := range v.BotReplies() {
			if strings.Contains(string(m.Blocks), konstruct.ActionStop) {
				streaming = m
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("no Stop button on the streaming answer: %v", err)
	}
	// Someone else's Stop is ignored; the asker's stops it.
	if err := e.sim.ClickButton(wsA.TeamID, wsA.GeneralChannelID, streaming.TS, other, konstruct.ActionStop); err != nil {
		t.Fatal(err)
	}
	if err := e.sim.ClickButton(wsA.TeamID, wsA.GeneralChannelID, streaming.TS, asker, konstruct.ActionStop); err != nil {
		t.Fatal(err)
	}
	clicked := time.Now()
	stopped := func(v slacksim.ThreadView) bool {
		r := v.BotReplies()
		return len(r) == 1 && strings.Contains(r[0].Text, "Stopped") && !strings.Contains(string(r[0].Blocks), konstruct.ActionStop)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	v, err := e.sim.WaitThread(sctx, wsA.TeamID, wsA.GeneralChannelID, root, stopped)
	if err != nil {
		t.Fatalf("not stopped within 5 s of the click: %+v", v.BotReplies())
	}
	t.Logf("stopped %v after the click", time.Since(clicked).Round(time.Millisecond))
	answer := v.BotReplies()[0]
	if !strings.HasPrefix(answer.Text, "Here is the start") {
		t.Errorf("the partial answer is gone: %q", answer.Text)
	}
	time.Sleep(1500 * time.Millisecond) // past the edit interval: the answer no longer changes
	if after := e.sim.Thread(wsA.TeamID, wsA.GeneralChannelID, root).BotReplies(); after[0].Updates != answer.Updates || after[0].Text != answer.Text {
		t.Errorf("the stopped answer changed: %d → %d updates", answer.Updates, after[0].Updates)
	}

	// Votes: one per person, changeable.
	for _, c := range []struct{ user, action string }{
		{asker, konstruct.ActionVoteUp}, {other, konstruct.ActionVoteUp}, {asker, konstruct.ActionVoteDown},
	} {
		if err := e.sim.ClickButton(wsA.TeamID, wsA.GeneralChannelID, answer.TS, c.user, c.action); err != nil {
			t.Fatal(err)
		}
	}
	st := testenv.OpenStore(t, e.pg.RuntimeURL, nil)
	post := konstruct.Post{TenantID: a, TeamID: wsA.TeamID, ChannelID: wsA.GeneralChannelID, TS: root}
	waitFor(t, 10*time.Second, "the votes", func() bool {
		votes, _ := st.Votes(context.Background(), post)
		return len(votes) == 2 && !votes[asker] && votes[other]
	})

	// A person of beta's workspace clicks on alpha's answer (a shared
	// channel): the click is beta's workspace's, the answer alpha's.
	foreign := metricValue(t, addr, `konstruct_route_outcomes_total{outcome="foreign_click"}`)
	for _, action := range []string{konstruct.ActionVoteUp, konstruct.ActionVoteDown} {
		if err := e.sim.ClickButtonAs(wsA.TeamID, wsA.GeneralChannelID, answer.TS, wsB.TeamID, wsB.UserIDs[0], action); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the foreign clicks routed", func() bool {
		return metricValue(t, addr, `konstruct_route_outcomes_total{outcome="foreign_click"}`) == foreign+2
	})
	if votes, _ := st.Votes(context.Background(), post); len(votes) != 2 || votes[wsB.UserIDs[0]] {
		t.Errorf("alpha's votes after beta's clicks: %v", votes)
	}
	for _, tn := range []string{a, b} {
		if n := adminCount(t, e.pg.AdminURL, "SELECT count(*) FROM feedback WHERE tenant_id = $1 AND user_id = $2", tn, wsB.UserIDs[0]); n != 0 {
			t.Errorf("tenant %s has %d votes of beta's person", tn, n)
		}
	}
	// usage shows the votes and the stopped answer.
	var doc map[string]any
	if err := json.Unmarshal([]byte(mustCLI(t, e.vars, "usage", "--tenant", "alpha", "--format", "json").stdout), &doc); err != nil {
		t.Fatal(err)
	}
	if doc["answers"] != 1.0 || doc["feedback_up"] != 1.0 || doc["feedback_down"] != 1.0 {
		t.Errorf("usage after the clicks: %v", doc)
	}
}

// TestBudgetCrossingMidStreamDaemon: the tenant's budget runs out while a
// long answer streams: that answer finishes in full, a question asked
// meanwhile gets the budget line (ephemeral, once) and no LLM call, no
// placeholder; the 80 % crossing shows in the metrics.
func TestBudgetCrossingMidStreamDaemon(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	long := strings.Repeat("tokens ", 1500) + "THE END"
	e := newEnv(t, envOpts{llm: func(r llmfake.ChatRequest) llmfake.Reply {
		calls.Add(1)
		return llmfake.Reply{Text: long, TokenDelay: 2 * time.Millisecond}
	}})
	id, ws := e.seed("thrifty")
	mustCLI(t, e.vars, "budget", "set", "--tenant", "thrifty", "--tokens-per-day", "1200")
	addr := startDaemonRun(t, e)
	waitFor(t, 10*time.Second, "sockets", func() bool { return e.sim.Connections(ws.AppID) > 0 })
	q := e.rd.NewQueue(t, queue.Config{})

	first, _ := e.sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[0], "write a lot", "")
	waitFor(t, 20*time.Second, "the budget crossed while the answer streams", func() bool {
		used, _, _ := q.TokensUsed(context.Background(), id, time.Now())
		return used >= 1200
	})
	if v := e.sim.Thread(ws.TeamID, ws.GeneralChannelID, first).BotReplies(); len(v) == 0 || strings.Contains(v[len(v)-1].Text, "THE END") {
		t.Fatal("the answer was not streaming any more when the budget ran out: make it longer")
	}
	second, _ := e.sim.Mention(ws.TeamID, ws.GeneralChannelID, ws.UserIDs[1], "one more", "")
	line := router.BudgetText(konstruct.PeriodDay, time.Now())
	// A top-level question: the ephemeral shows in the channel, where the
	// person is looking (as the rate limit's does).
	waitFor(t, 10*time.Second, "the budget line", func() bool {
		return len(e.sim.Thread(ws.TeamID, ws.GeneralChannelID, "").Ephemerals[ws.UserIDs[1]]) == 1
	})
	if got := e.sim.Thread(ws.TeamID, ws.GeneralChannelID, "").Ephemerals[ws.UserIDs[1]][0]; got != line {
		t.Errorf("ephemeral %q, want %q", got, line)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := e.sim.WaitThread(ctx, ws.TeamID, ws.GeneralChannelID, first, func(v slacksim.ThreadView) bool {
		r := v.BotReplies()
		return len(r) > 0 && !r[len(r)-1].Streaming && strings.HasSuffix(r[len(r)-1].Text, "THE END")
	})
	if err != nil {
		t.Fatalf("the answer in progress did not finish: %v (%d messages)", err, len(v.BotReplies()))
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d LLM calls, want 1 (the question over budget never reaches it)", n)
	}
	if r := e.sim.Thread(ws.TeamID, ws.GeneralChannelID, second).BotReplies(); len(r) != 0 {
		t.Errorf("the question over budget got %+v", r)
	}
	if n := metricValue(t, addr, `konstruct_budget_crossings_total{period="day",threshold="80"}`); n != 1 {
		t.Errorf("80%% crossings %v, want 1", n)
	}
}
