package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/config"
	"github.com/konstruct/konstruct/store"
)

func init() { commands = append(commands, newPolicyCmd, newBudgetCmd, newUsageCmd) }

// Slack ids the policy lists hold: channels (public C…, private G…) and
// people (U…, W… in Enterprise Grid). Events carry ids, never names.
var (
	channelIDPattern = regexp.MustCompile(`^[CG][A-Z0-9]+$`)
	userIDPattern    = regexp.MustCompile(`^[UW][A-Z0-9]+$`)
)

// idList reads a flag's comma-separated Slack ids: "" clears the list, and
// so does "all" where all allows it (an empty allow list means all).
func idList(flag, v string, all bool, pattern *regexp.Regexp, what string) ([]string, error) {
	v = strings.TrimSpace(v)
	if v == "" || (all && strings.EqualFold(v, "all")) {
		return []string{}, nil
	}
	var out []string
	for id := range strings.SplitSeq(v, ",") {
		if id = strings.TrimSpace(id); id == "" {
			continue
		}
		if !pattern.MatchString(id) {
			return nil, fmt.Errorf("--%s: %q is not a Slack %s id (%s)", flag, id, what, map[string]string{
				"channel": "C… or G…; a channel's details in Slack show it",
				"user":    "U… or W…; a person's profile in Slack shows it under ⋮ → Copy member ID",
			}[what])
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out, nil
}

// Bounds of --follow-ttl (0 means threads.engaged_ttl).
const (
	minFollowTTL = time.Minute
	maxFollowTTL = 30 * 24 * time.Hour
)

// policyPatch reads the flags of `policy set` that were given.
func policyPatch(cmd *cobra.Command, channels, deny, users, dms, follow, ttl string) (konstruct.PolicyPatch, error) {
	var p konstruct.PolicyPatch
	var errs []error
	changed := cmd.Flags().Changed
	if changed("channels") {
		l, err := idList("channels", channels, true, channelIDPattern, "channel")
		errs = append(errs, err)
		p.Channels = &l
	}
	if changed("deny-channels") {
		l, err := idList("deny-channels", deny, false, channelIDPattern, "channel")
		errs = append(errs, err)
		p.DenyChannels = &l
	}
	if changed("users") {
		l, err := idList("users", users, true, userIDPattern, "user")
		errs = append(errs, err)
		p.Users = &l
	}
	if changed("dms") {
		switch on := strings.ToLower(strings.TrimSpace(dms)); on {
		case "on", "off":
			b := on == "on"
			p.DMs = &b
		default:
			errs = append(errs, fmt.Errorf("--dms: on or off, got %q", dms))
		}
	}
	if changed("follow-threads") {
		if m, ok := konstruct.ParseFollowMode(strings.ToLower(strings.TrimSpace(follow))); ok {
			p.Follow = &m
		} else {
			errs = append(errs, fmt.Errorf("--follow-threads: auto, mention or off, got %q", follow))
		}
	}
	if changed("follow-ttl") {
		d, err := time.ParseDuration(strings.TrimSpace(ttl))
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("--follow-ttl: a duration such as 30m or 2h, got %q", ttl))
		case d != 0 && (d < minFollowTTL || d > maxFollowTTL):
			errs = append(errs, fmt.Errorf("--follow-ttl: between 1m and 720h (or 0: threads.engaged_ttl), got %s", ttl))
		default:
			d = d.Round(time.Second)
			p.FollowTTL = &d
		}
	}
	if err := errors.Join(errs...); err != nil {
		return p, err
	}
	if p.Empty() {
		return p, errors.New("nothing to change: give at least one of --channels, --deny-channels, --users, --dms, --follow-threads, --follow-ttl")
	}
	return p, nil
}

func newPolicyCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Decide who a tenant's AI employee answers, where, and how it follows threads"}
	var tenant, channels, deny, users, dms, follow, ttl string
	set := &cobra.Command{
		Use:   "set --tenant ID|SLUG [--channels all|C1,C2] [--deny-channels C3,C4] [--users all|U1,U2] [--dms on|off] [--follow-threads auto|mention|off] [--follow-ttl 30m]",
		Short: "Change the flags given of the tenant's policy (the others stay); running daemons apply it within 10 s",
		Long: "Changes only the settings whose flags are given, and prints the policy that holds then.\n" +
			"Lists are Slack ids, comma-separated; an empty list (--deny-channels \"\") clears it, and\n" +
			"--channels all / --users all answer everywhere / everyone again. Deny beats allow.\n" +
			"Outside the policy a channel message gets nothing at all (no placeholder, no note); a DM\n" +
			"gets one short \"not enabled for you here\" per person per UTC day.\n" +
			"--follow-threads: auto (after an answer, follow-ups in the thread are answered without a\n" +
			"mention for --follow-ttl), mention (only mentions are answered, with the thread as context),\n" +
			"off (only mentions are answered, each on its own: the thread's other messages are not read).\n" +
			"--follow-ttl 0 goes back to threads.engaged_ttl.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			patch, perr := policyPatch(cmd, channels, deny, users, dms, follow, ttl)
			var flagErr error
			if perr != nil {
				flagErr = fmt.Errorf("policy set: %w", perr)
			}
			if tenant == "" {
				flagErr = errors.Join(flagErr, errors.New("policy set: --tenant is required"))
			}
			return a.patchPolicy(cmd, "policy set", tenant, flagErr, patch)
		},
	}
	set.Flags().StringVar(&tenant, "tenant", "", "tenant id or slug (required)")
	set.Flags().StringVar(&channels, "channels", "", `channels answered in: "all", or Slack channel ids C1,C2`)
	set.Flags().StringVar(&deny, "deny-channels", "", `channels never answered in (beats --channels); "" clears`)
	set.Flags().StringVar(&users, "users", "", `people answered: "all", or Slack user ids U1,U2`)
	set.Flags().StringVar(&dms, "dms", "", "answer direct messages: on or off")
	set.Flags().StringVar(&follow, "follow-threads", "", "auto, mention or off")
	set.Flags().StringVar(&ttl, "follow-ttl", "", "how long an answered thread is followed with auto, e.g. 30m (0: threads.engaged_ttl)")

	var asJSON bool
	show := &cobra.Command{
		Use:   "show --tenant ID|SLUG [--json]",
		Short: "Print the tenant's policy and budgets",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var flagErr error
			if tenant == "" {
				flagErr = errors.New("policy show: --tenant is required")
			}
			cfg, st, err := a.storeFor(cmd, flagErr, config.NeedDatabase)
			if err != nil {
				return err
			}
			defer st.Close()
			t, err := st.ResolveTenant(cmd.Context(), tenant)
			if err != nil {
				return fmt.Errorf("policy show: tenant %q: %w", tenant, err)
			}
			p, err := st.Policy(cmd.Context(), t.ID)
			if err != nil {
				return fmt.Errorf("policy show: %w", err)
			}
			return a.printPolicy(t, p, cfg.Threads.EngagedTTL, asJSON)
		},
	}
	show.Flags().StringVar(&tenant, "tenant", "", "tenant id or slug (required)")
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(set, show)
	return cmd
}

// policyView is a policy as `policy show` prints it: each setting as the
// value its flag takes, so that a script can feed it back to `policy set`.
type policyView struct {
	TenantID       string  `json:"tenant_id"`
	Tenant         string  `json:"tenant"`
	Channels       string  `json:"channels"`      // "all" or C1,C2
	DenyChannels   string  `json:"deny_channels"` // "" or C3,C4
	Users          string  `json:"users"`         // "all" or U1,U2
	DMs            string  `json:"dms"`           // on | off
	FollowThreads  string  `json:"follow_threads"`
	FollowTTL      string  `json:"follow_ttl"` // the TTL in force (threads.engaged_ttl unless set)
	TokensPerDay   int64   `json:"tokens_per_day"`
	TokensPerMonth int64   `json:"tokens_per_month"`
	UpdatedAt      *string `json:"updated_at"` // null: never set (the defaults)
}

func viewPolicy(t konstruct.Tenant, p konstruct.Policy, engagedTTL time.Duration) (policyView, bool) {
	all := func(l []string) string {
		if len(l) == 0 {
			return "all"
		}
		return strings.Join(l, ",")
	}
	v := policyView{
		TenantID: t.ID, Tenant: t.Slug, Channels: all(p.Channels), DenyChannels: strings.Join(p.DenyChannels, ","),
		Users: all(p.Users), DMs: "off", FollowThreads: string(p.Follow), FollowTTL: shortDur(engagedTTL),
		TokensPerDay: p.TokensPerDay, TokensPerMonth: p.TokensPerMonth,
	}
	if p.DMs {
		v.DMs = "on"
	}
	if p.FollowTTL > 0 {
		v.FollowTTL = shortDur(p.FollowTTL)
	}
	if !p.UpdatedAt.IsZero() {
		u := p.UpdatedAt.UTC().Format(time.RFC3339)
		v.UpdatedAt = &u
	}
	return v, p.FollowTTL == 0
}

func (a *app) printPolicy(t konstruct.Tenant, p konstruct.Policy, engagedTTL time.Duration, asJSON bool) error {
	v, ttlDefault := viewPolicy(t, p, engagedTTL)
	if asJSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	budget := func(n int64) string {
		if n == 0 {
			return "none"
		}
		return strconv.FormatInt(n, 10) + " tokens"
	}
	ttl := v.FollowTTL
	if ttlDefault {
		ttl += " (threads.engaged_ttl)"
	}
	tw := a.table("SETTING\tVALUE")
	for _, row := range [][2]string{
		{"tenant", t.Slug + " (" + t.ID + ")"},
		{"channels", v.Channels},
		{"deny-channels", cmpDash(v.DenyChannels, "none")},
		{"users", v.Users},
		{"dms", v.DMs},
		{"follow-threads", v.FollowThreads},
		{"follow-ttl", ttl},
		{"tokens-per-day", budget(v.TokensPerDay)},
		{"tokens-per-month", budget(v.TokensPerMonth)},
		{"updated", cmpDash(derefOr(v.UpdatedAt), "never (defaults)")},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	return tw.Flush()
}

func cmpDash(s, none string) string {
	if s == "" {
		return none
	}
	return s
}

func derefOr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// shortDur prints a duration as a person writes it: 30m, 1h30m, 45s.
func shortDur(d time.Duration) string {
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func newBudgetCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "budget", Short: "Bound the LLM tokens a tenant's AI employee spends"}
	var tenant string
	var perDay, perMonth int64
	set := &cobra.Command{
		Use:   "set --tenant ID|SLUG [--tokens-per-day N] [--tokens-per-month N]",
		Short: "Set the tenant's token budgets per UTC day and month (0 = none); running daemons apply them within 10 s",
		Long: "Tokens are prompt plus answer, as the provider reports them (estimated when it does not).\n" +
			"When a budget is used up, a question gets one short line instead of an answer (\"today's budget\n" +
			"is used up; back at 00:00 UTC\"; the monthly one says the day), at most once per person per UTC\n" +
			"day, and the LLM is not called. An answer already under way when the budget runs out is\n" +
			"finished. At 80 % of a budget the daemon logs a warning and counts konstruct_budget_crossings_total.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var p konstruct.PolicyPatch
			var errs []error
			if tenant == "" {
				errs = append(errs, errors.New("budget set: --tenant is required"))
			}
			for _, f := range []struct {
				name string
				v    *int64
				dst  **int64
			}{{"tokens-per-day", &perDay, &p.TokensPerDay}, {"tokens-per-month", &perMonth, &p.TokensPerMonth}} {
				if !cmd.Flags().Changed(f.name) {
					continue
				}
				if *f.v < 0 {
					errs = append(errs, fmt.Errorf("budget set: --%s must be 0 (none) or more, got %d", f.name, *f.v))
				}
				*f.dst = f.v
			}
			if p.Empty() {
				errs = append(errs, errors.New("budget set: nothing to change: give --tokens-per-day and/or --tokens-per-month"))
			}
			return a.patchPolicy(cmd, "budget set", tenant, errors.Join(errs...), p)
		},
	}
	set.Flags().StringVar(&tenant, "tenant", "", "tenant id or slug (required)")
	set.Flags().Int64Var(&perDay, "tokens-per-day", 0, "tokens per UTC day (0 = none)")
	set.Flags().Int64Var(&perMonth, "tokens-per-month", 0, "tokens per calendar month, UTC (0 = none)")
	cmd.AddCommand(set)
	return cmd
}

var sincePattern = regexp.MustCompile(`^([1-9][0-9]{0,5})([dh])$`)

// parseSince reads Nd (days) or Nh (hours).
func parseSince(s string) (time.Duration, error) {
	m := sincePattern.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("--since: Nd or Nh, such as 30d or 12h, got %q", s)
	}
	n, _ := strconv.Atoi(m[1])
	if m[2] == "d" {
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.Duration(n) * time.Hour, nil
}

// usageColumns are the figures in the order every format prints them;
// their names are the JSON fields (and the CSV header).
var usageColumns = []string{"questions", "answers", "errors", "tokens_in", "tokens_out",
	"ttft_p50_ms", "ttft_p95_ms", "answer_p50_ms", "answer_p95_ms", "feedback_up", "feedback_down"}

// usageFigures is UsageFigures under the JSON names; a percentile without
// answers is null.
type usageFigures struct {
	Questions    int64  `json:"questions"`
	Answers      int64  `json:"answers"`
	Errors       int64  `json:"errors"`
	TokensIn     int64  `json:"tokens_in"`
	TokensOut    int64  `json:"tokens_out"`
	TTFTP50      *int64 `json:"ttft_p50_ms"`
	TTFTP95      *int64 `json:"ttft_p95_ms"`
	AnswerP50    *int64 `json:"answer_p50_ms"`
	AnswerP95    *int64 `json:"answer_p95_ms"`
	FeedbackUp   int64  `json:"feedback_up"`
	FeedbackDown int64  `json:"feedback_down"`
}

func figuresOf(f store.UsageFigures) usageFigures {
	return usageFigures{f.Questions, f.Answers, f.Errors, f.TokensIn, f.TokensOut, f.TTFTP50, f.TTFTP95, f.AnswerP50, f.AnswerP95, f.FeedbackUp, f.FeedbackDown}
}

// cells are the figures as text, in usageColumns' order ("" for null).
func (f usageFigures) cells() []string {
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	p := func(v *int64) string {
		if v == nil {
			return ""
		}
		return n(*v)
	}
	return []string{n(f.Questions), n(f.Answers), n(f.Errors), n(f.TokensIn), n(f.TokensOut),
		p(f.TTFTP50), p(f.TTFTP95), p(f.AnswerP50), p(f.AnswerP95), n(f.FeedbackUp), n(f.FeedbackDown)}
}

func newUsageCmd(a *app) *cobra.Command {
	var tenant, since, by, format string
	cmd := &cobra.Command{
		Use:   "usage --tenant ID|SLUG [--since 30d] [--by day|channel|user] [--format table|csv|json]",
		Short: "How the tenant's AI employee did: questions, answers, errors, tokens, latency, 👍/👎",
		Long: "Figures of the questions asked since --since (Nd or Nh) until now: questions (refused ones\n" +
			"included: over a budget or a rate limit), answers (stopped ones included), errors, tokens in\n" +
			"(prompt) and out (answer), p50/p95 of the time to the model's first token and of the time from\n" +
			"the question to the final answer (answers only, in ms), and the 👍/👎 their answers got.\n" +
			"--by day (UTC), channel (Slack channel id) or user (who asked, Slack user id) adds a row each.\n" +
			"JSON: an object with the totals (and tenant, since, until, by), and with --by a rows array whose\n" +
			"objects carry day, channel or user; CSV starts with a header row.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var errs []error
			if tenant == "" {
				errs = append(errs, errors.New("usage: --tenant is required"))
			}
			window, err := parseSince(since)
			if err != nil {
				errs = append(errs, fmt.Errorf("usage: %w", err))
			}
			switch by {
			case "", store.UsageByDay, store.UsageByChannel, store.UsageByUser:
			default:
				errs = append(errs, fmt.Errorf("usage: --by: day, channel or user, got %q", by))
			}
			switch format {
			case "table", "csv", "json":
			default:
				errs = append(errs, fmt.Errorf("usage: --format: table, csv or json, got %q", format))
			}
			_, st, err := a.storeFor(cmd, errors.Join(errs...), config.NeedDatabase)
			if err != nil {
				return err
			}
			defer st.Close()
			t, err := st.ResolveTenant(cmd.Context(), tenant)
			if err != nil {
				return fmt.Errorf("usage: tenant %q: %w", tenant, err)
			}
			until := time.Now().UTC().Truncate(time.Second)
			rep, err := st.Usage(cmd.Context(), t.ID, until.Add(-window), until.Add(time.Second), by)
			if err != nil {
				return fmt.Errorf("usage: %w", err)
			}
			rep.Until = until
			switch format {
			case "json":
				return writeUsageJSON(a.stdout, t, rep)
			case "csv":
				return writeUsageCSV(a.stdout, rep)
			}
			return a.writeUsageTable(t, rep, since)
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant id or slug (required)")
	cmd.Flags().StringVar(&since, "since", "30d", "window: Nd (days) or Nh (hours) back from now")
	cmd.Flags().StringVar(&by, "by", "", "a row per day (UTC), channel or user")
	cmd.Flags().StringVar(&format, "format", "table", "table, csv or json")
	return cmd
}

func writeUsageJSON(w io.Writer, t konstruct.Tenant, rep store.UsageReport) error {
	head, err := json.Marshal(struct {
		TenantID string `json:"tenant_id"`
		Tenant   string `json:"tenant"`
		Since    string `json:"since"`
		Until    string `json:"until"`
		By       string `json:"by,omitempty"`
	}{t.ID, t.Slug, rep.Since.UTC().Format(time.RFC3339), rep.Until.UTC().Format(time.RFC3339), rep.By})
	if err != nil {
		return err
	}
	total, err := json.Marshal(figuresOf(rep.Total))
	if err != nil {
		return err
	}
	// {head…, totals…, "rows": [{"<by>": key, figures…}, …]}
	out := append(head[:len(head)-1], ',')
	out = append(out, total[1:len(total)-1]...)
	if rep.By != "" {
		out = append(out, `,"rows":[`...)
		for i, r := range rep.Rows {
			if i > 0 {
				out = append(out, ',')
			}
			key, _ := json.Marshal(r.Key)
			f, err := json.Marshal(figuresOf(r.UsageFigures))
			if err != nil {
				return err
			}
			out = append(out, `{"`+rep.By+`":`...)
			out = append(out, key...)
			out = append(out, ',')
			out = append(out, f[1:]...)
		}
		out = append(out, ']')
	}
	out = append(out, '}')
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, out, "", "  "); err != nil {
		return err
	}
	pretty.WriteByte('\n')
	_, err = w.Write(pretty.Bytes())
	return err
}

func writeUsageCSV(w io.Writer, rep store.UsageReport) error {
	cw := csv.NewWriter(w)
	if rep.By == "" {
		_ = cw.Write(usageColumns)
		_ = cw.Write(figuresOf(rep.Total).cells())
	} else {
		_ = cw.Write(append([]string{rep.By}, usageColumns...))
		for _, r := range rep.Rows {
			_ = cw.Write(append([]string{r.Key}, figuresOf(r.UsageFigures).cells()...))
		}
	}
	cw.Flush()
	return cw.Error()
}

func (a *app) writeUsageTable(t konstruct.Tenant, rep store.UsageReport, since string) error {
	fmt.Fprintf(a.stdout, "%s: questions since %s (%s), until %s\n\n", t.Slug, rep.Since.UTC().Format(time.RFC3339), since, rep.Until.UTC().Format(time.RFC3339))
	cols := make([]string, 0, len(usageColumns)+1)
	if rep.By != "" {
		cols = append(cols, strings.ToUpper(rep.By))
	}
	for _, c := range usageColumns {
		cols = append(cols, strings.ToUpper(c))
	}
	tw := a.table(strings.Join(cols, "\t"))
	row := func(key string, f store.UsageFigures) {
		cells := figuresOf(f).cells()
		for i, c := range cells {
			cells[i] = cmpDash(c, "-")
		}
		if rep.By != "" {
			cells = append([]string{cmpDash(key, "-")}, cells...)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	if rep.By == "" {
		row("", rep.Total)
		return tw.Flush()
	}
	for _, r := range rep.Rows {
		row(r.Key, r.UsageFigures)
	}
	row("TOTAL", rep.Total)
	return tw.Flush()
}

// patchPolicy applies a patch to a tenant's policy for `policy set` and
// `budget set` (name prefixes their errors) and prints the policy it made;
// flagErr, the flags' problems, is reported with the config's.
func (a *app) patchPolicy(cmd *cobra.Command, name, tenant string, flagErr error, patch konstruct.PolicyPatch) error {
	cfg, st, err := a.storeFor(cmd, flagErr, config.NeedDatabase)
	if err != nil {
		return err
	}
	defer st.Close()
	t, err := st.ResolveTenant(cmd.Context(), tenant)
	if err != nil {
		return fmt.Errorf("%s: tenant %q: %w", name, tenant, err)
	}
	p, err := st.SetPolicy(cmd.Context(), t.ID, patch)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return a.printPolicy(t, p, cfg.Threads.EngagedTTL, false)
}
