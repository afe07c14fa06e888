package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/bot"
	"github.com/konstruct/konstruct/config"
	"github.com/konstruct/konstruct/llm"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/secret"
	"github.com/konstruct/konstruct/store"
)

func init() { commands = append(commands, newDoctorCmd) }

// check is one line of the doctor's table.
type check struct {
	Name   string
	OK     bool
	Skip   bool
	Warn   bool // worth a look, but not a failure
	Detail string
	Fix    string
}

func newDoctorCmd(a *app) *cobra.Command {
	var envPath string
	cmd := &cobra.Command{
		Use:   "doctor [--env-file /etc/konstruct/konstruct.env]",
		Short: "Check config, database role, migrations, Redis, every workspace's tokens and the LLM",
		Long: "Runs every check and prints a pass/fail table with the fix for each failure.\n" +
			"Exits non-zero when any check fails. --env-file reads the service's EnvironmentFile the way\n" +
			"systemd does (its values win over this shell's), so the check sees what the service will.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			checks := append(a.doctor(cmd, envPath), serviceChecks(cmd.Context())...)
			tw := a.table("CHECK\tRESULT\tDETAIL")
			failed := 0
			for _, c := range checks {
				res := "PASS"
				switch {
				case c.Skip:
					res = "SKIP"
				case c.Warn:
					res = "WARN"
				case !c.OK:
					res = "FAIL"
					failed++
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, res, konstruct.Redact(c.Detail))
				if !c.OK && !c.Skip && c.Fix != "" || c.Warn && c.Fix != "" {
					fmt.Fprintf(tw, "\t\t→ fix: %s\n", konstruct.Redact(c.Fix))
				}
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("doctor: %d of %d checks failed", failed, len(checks))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&envPath, "env-file", "", "read this systemd EnvironmentFile first, as the service does")
	return cmd
}

// secretKeyFix is what to do when the stored tokens do not open with the
// configured key: the usual cause is a key generated anew each time.
const secretKeyFix = "secret_key must be the key the tokens were stored with. Write that key's value in the env file, " +
	"not a command: `KONSTRUCT_SECRET_KEY=$(openssl rand -base64 32)` makes a new key each time it is read " +
	"(generate it once: echo \"KONSTRUCT_SECRET_KEY=$(openssl rand -base64 32)\" >> /etc/konstruct/konstruct.env). " +
	"After a rotation, list the old key in secret_key_previous. If the key is lost, `konstruct workspace add` each workspace again"

func (a *app) doctor(cmd *cobra.Command, envPath string) []check {
	ctx := cmd.Context()
	var checks []check
	add := func(c check) { checks = append(checks, c) }

	getenv := a.getenv
	if envPath != "" {
		ef, err := readEnvFile(envPath)
		if err != nil {
			add(check{Name: "env file", Detail: errorLine(err), Fix: "the service reads this file (EnvironmentFile=): one KEY=value per line"})
			return checks
		}
		getenv = ef.getenv(a.getenv)
		add(check{Name: "env file", OK: true, Detail: fmt.Sprintf("%s: %d variables, read as systemd does", envPath, len(ef.Vars))})
		for _, l := range ef.Invalid {
			add(check{Name: "env file", Detail: l + " is not KEY=value: systemd ignores it",
				Fix: "write it as KEY=value (no `export`, no spaces around the key)"})
		}
		for _, k := range ef.Commands {
			add(check{Name: "env file", Detail: k + " is a shell command ($(…) or `…`): systemd does not run it, the service gets the text",
				Fix: "write the value itself; for the key, run once: echo \"KONSTRUCT_SECRET_KEY=$(openssl rand -base64 32)\" >> " + envPath})
		}
	}

	cfg, err := config.Load(config.Options{Path: a.configPath, Getenv: getenv, Flags: cmd.Flags()})
	if err != nil {
		add(check{Name: "config", Detail: err.Error(), Fix: "correct the config file or the KONSTRUCT_* variable named above"})
		return checks
	}
	a.setLogger(newLogger(a.stderr, "text", "error"))
	all := []config.Part{config.NeedDatabase, config.NeedSecret, config.NeedRedis, config.NeedSlack, config.NeedLLM, config.NeedWorker, config.NeedHTTP}
	if err := cfg.Validate(all...); err != nil {
		fix := "set the keys named above in the config file or the environment"
		if cfg.SecretKey == "" {
			fix += fmt.Sprintf("; for secret_key, generate it once and keep a copy: echo \"KONSTRUCT_SECRET_KEY=$(openssl rand -base64 32)\" >> %s",
				cmp.Or(envPath, serviceEnvFile))
		}
		if strings.Contains(cfg.SecretKey, "$(") || strings.Contains(cfg.SecretKey, "`") {
			fix += "; secret_key holds a shell command, which nothing runs: generate the key once (openssl rand -base64 32) and write its value"
		}
		if _, statErr := os.Stat(serviceEnvFile); envPath == "" && statErr == nil {
			fix += fmt.Sprintf("; the service reads %s: check with `konstruct doctor --env-file %s`", serviceEnvFile, serviceEnvFile)
		}
		add(check{Name: "config", Detail: strings.ReplaceAll(err.Error(), "\n", "; "), Fix: fix})
	} else {
		add(check{Name: "config", OK: true, Detail: "file: " + cmp.Or(cfg.File, "(none, environment only)")})
	}
	if c, on := tracingCheck(ctx, cfg); on {
		add(c)
	}
	for _, k := range cfg.Unknown {
		add(check{Name: "config", Warn: true, Detail: fmt.Sprintf("unknown key %s in %s, ignored (a typo?)", k, cfg.File),
			Fix: "remove it or correct its name (`konstruct --help` and the README list the keys)"})
	}

	// Database: reachable, role safe, migrations current.
	var (
		st       *store.Store
		migrated bool // the schema is the binary's: the workspace check can run
	)
	if cfg.Database.URL == "" {
		add(check{Name: "database", Skip: true, Detail: "database.url is not set"})
	} else {
		var box *secret.Box
		if cfg.SecretKey != "" {
			box, _ = secret.NewBox(cfg.SecretKey, cfg.SecretKeyPrevious...)
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err = store.Open(cctx, cfg.Database.URL, box, a.logger)
		cancel()
		if err != nil {
			add(check{Name: "database", Detail: errorLine(err), Fix: "check database.url and that PostgreSQL is running and reachable; " +
				"the database and its two roles are created as in the README, \"Install on a server\", step 2"})
		} else {
			defer st.Close()
			add(check{Name: "database", OK: true, Detail: "connected"})
			if err := st.CheckRole(ctx); err != nil {
				add(check{Name: "database role", Detail: konstruct.ErrorMessage(err), Fix: "connect as a dedicated role: CREATE ROLE konstruct_app LOGIN NOSUPERUSER NOBYPASSRLS"})
			} else {
				add(check{Name: "database role", OK: true, Detail: "not superuser, no BYPASSRLS: Row-Level Security applies"})
			}
			cur, latest, err := st.MigrationsCurrent(ctx)
			switch {
			case err != nil:
				add(check{Name: "migrations", Detail: err.Error(), Fix: "run `konstruct migrate`"})
			case cur == 0:
				add(check{Name: "migrations", Detail: "the database is not migrated (no Konstruct tables yet)", Fix: "run `konstruct migrate` (as root with the env file loaded; it uses database.migrate_url)"})
			case cur < latest:
				add(check{Name: "migrations", Detail: fmt.Sprintf("database at version %d, binary expects %d", cur, latest), Fix: "run `konstruct migrate`"})
			default:
				migrated = true
				add(check{Name: "migrations", OK: true, Detail: fmt.Sprintf("version %d (current)", cur)})
			}
		}
	}

	// Redis: reachable, and keeping what it is given.
	if q, err := queue.Open(cfg.Queue()); err != nil {
		add(check{Name: "redis", Detail: "redis.url: " + err.Error(), Fix: "set redis.url to redis://host:port/db"})
	} else {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := q.Ping(cctx)
		var dur queue.Durability
		var durErr error
		if err == nil {
			dur, durErr = q.Durability(cctx)
		}
		cancel()
		_ = q.Close()
		topo := q.Topology()
		switch {
		case err != nil:
			add(check{Name: "redis", Detail: topo + ": " + err.Error(), Fix: "check redis.url (and redis.sentinel.* or redis.cluster.addrs) and that Redis is running"})
		case durErr != nil:
			add(check{Name: "redis", OK: true, Detail: topo + " reachable; persistence not checked (CONFIG GET refused): make sure AOF is on and maxmemory-policy is noeviction"})
		case len(dur.Problems()) > 0:
			for _, p := range dur.Problems() {
				detail, fix, _ := strings.Cut(p, "; ")
				add(check{Name: "redis", Detail: detail, Fix: fix})
			}
		default:
			add(check{Name: "redis", OK: true, Detail: fmt.Sprintf("%s reachable; appendonly %s, maxmemory-policy %s", topo, map[bool]string{true: "yes", false: "no (RDB snapshots)"}[dur.AOF], dur.EvictionPolicy)})
		}
	}

	// Workspaces: each one's tokens.
	switch {
	case st == nil:
	case !migrated:
		add(check{Name: "workspaces", Skip: true, Detail: "checked once the database is migrated"})
	case cfg.SecretKey == "":
		add(check{Name: "workspaces", Skip: true, Detail: "secret_key is not set: the tokens cannot be read"})
	default:
		ws, err := st.ActiveWorkspaces(ctx)
		switch {
		case errors.Is(err, secret.ErrUnknownKey), errors.Is(err, secret.ErrDecrypt):
			add(check{Name: "workspaces", Detail: errorLine(err), Fix: secretKeyFix})
		case err != nil:
			add(check{Name: "workspaces", Detail: errorLine(err), Fix: "run `konstruct migrate`, which grants the runtime role what it needs"})
		case len(ws) == 0:
			add(check{Name: "workspaces", OK: true, Detail: "none active yet (add one with `konstruct workspace add`)"})
		}
		if teams, err := st.UnboundTokens(ctx); err == nil && len(teams) > 0 {
			add(check{Name: "token binding", Detail: fmt.Sprintf("the tokens of %d workspace(s) (%s) were stored before tokens were bound to their row",
				len(teams), strings.Join(teams, ", ")), Fix: "run `konstruct workspace rekey` once (SECURITY.md, \"What is encrypted\")"})
		}
		for _, w := range ws {
			name := "workspace " + w.TeamID
			if w.Problem != "" {
				// Skipped by the daemon, the others served.
				add(check{Name: name, Detail: w.Problem + " (the daemon skips it and serves the others)", Fix: secretKeyFix})
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			id, err := bot.AuthTest(cctx, nil, cfg.Slack.APIURL, w.BotToken)
			if err == nil {
				err = bot.CheckAppToken(cctx, nil, cfg.Slack.APIURL, w.AppToken)
				if err != nil {
					err = fmt.Errorf("app token: %w", err)
				}
			} else {
				err = fmt.Errorf("bot token: %w", err)
			}
			cancel()
			switch {
			case err != nil && konstruct.ErrorCode(err) == konstruct.EUNAUTHORIZED:
				add(check{Name: name, Detail: errorLine(err), Fix: "reinstall the app or create a new token, then `konstruct workspace add` again"})
			case err != nil:
				add(check{Name: name, Detail: errorLine(err), Fix: "check slack.api_url and outbound HTTPS to Slack"})
			case id.TeamID != w.TeamID:
				add(check{Name: name, Detail: "the bot token belongs to team " + id.TeamID, Fix: "`konstruct workspace add` with this workspace's bot token"})
			default:
				add(check{Name: name, OK: true, Detail: "bot and app tokens accepted"})
			}
		}
	}

	// LLM: each provider's model list and a one-token completion.
	providers := cfg.Providers()
	lcfg := cfg.LLMConfig()
	lcfg.DefaultModel, lcfg.Logger = cmp.Or(lcfg.DefaultModel, "unset"), a.logger
	lcfg.Timeouts = llm.Timeouts{FirstToken: 20 * time.Second, Idle: 20 * time.Second, Total: 30 * time.Second}
	client, err := llm.New(lcfg)
	if err != nil {
		add(check{Name: "llm", Detail: err.Error(), Fix: "correct llm.base_url / llm.providers"})
		return checks
	}
	defer client.Close()
	for _, p := range providers {
		name := "llm " + p.Name
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		models, err := client.ListModels(cctx, p.Name)
		var model string
		if err == nil && cfg.LLM.Model != "" {
			model, err = client.Probe(cctx, p.Name)
		}
		cancel()
		switch {
		case err != nil && konstruct.ErrorCode(err) == konstruct.EUNAUTHORIZED:
			add(check{Name: name, Detail: p.BaseURL + ": " + errorLine(err), Fix: "check llm.api_key (or the provider's api_key)"})
		case err != nil:
			add(check{Name: name, Detail: p.BaseURL + ": " + errorLine(err), Fix: "start the model server or correct llm.base_url; is llm.model served there?"})
		case cfg.LLM.Model == "":
			add(check{Name: name, Skip: true, Detail: fmt.Sprintf("%d models listed; llm.model unset, no completion tried", len(models))})
		default:
			add(check{Name: name, OK: true, Detail: fmt.Sprintf("%d models listed; %s answered a one-token completion", len(models), model)})
		}
	}
	return checks
}

// systemdUnitPaths are where the unit is installed: by the package, or by
// hand as the README says.
var systemdUnitPaths = []string{"/usr/lib/systemd/system/konstruct.service", "/lib/systemd/system/konstruct.service", "/etc/systemd/system/konstruct.service"}

// serviceChecks reports the systemd service where systemd runs and the unit
// is installed (none elsewhere: containers, CI, a build from source).
func serviceChecks(ctx context.Context) []check {
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		return nil
	}
	installed := false
	for _, p := range systemdUnitPaths {
		if _, err := os.Stat(p); err == nil {
			installed = true
		}
	}
	systemctl, err := exec.LookPath("systemctl")
	if !installed || err != nil {
		return nil
	}
	ask := func(verb string) string {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(cctx, systemctl, verb, "konstruct.service").Output() // non-zero for "no"
		return strings.TrimSpace(string(out))
	}
	enabled, active := ask("is-enabled"), ask("is-active")
	detail := fmt.Sprintf("konstruct.service is %s and %s", cmp.Or(enabled, "unknown"), cmp.Or(active, "unknown"))
	switch {
	case active == "failed":
		return []check{{Name: "service", Detail: detail, Fix: "see why with `journalctl -u konstruct -e`; fix what the checks above report, then `systemctl restart konstruct`"}}
	case active != "active" || enabled != "enabled":
		return []check{{Name: "service", Detail: detail, Fix: "once the checks above pass: `systemctl enable --now konstruct`, then `konstruct status`"}}
	}
	return []check{{Name: "service", OK: true, Detail: detail + "; `konstruct status` shows its workspaces"}}
}
