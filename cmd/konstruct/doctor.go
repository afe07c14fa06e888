package main

import (
	"cmp"
	"context"
	"fmt"
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
	Detail string
	Fix    string
}

func newDoctorCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check config, database role, migrations, Redis, every workspace's tokens and the LLM",
		Long: "Runs every check and prints a pass/fail table with the fix for each failure.\n" +
			"Exits non-zero when any check fails.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			checks := a.doctor(cmd)
			tw := a.table("CHECK\tRESULT\tDETAIL")
			failed := 0
			for _, c := range checks {
				res := "PASS"
				switch {
				case c.Skip:
					res = "SKIP"
				case !c.OK:
					res = "FAIL"
					failed++
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, res, konstruct.Redact(c.Detail))
				if !c.OK && !c.Skip && c.Fix != "" {
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
}

func (a *app) doctor(cmd *cobra.Command) []check {
	ctx := cmd.Context()
	var checks []check
	add := func(c check) { checks = append(checks, c) }

	cfg, err := config.Load(config.Options{Path: a.configPath, Getenv: a.getenv, Flags: cmd.Flags()})
	if err != nil {
		add(check{Name: "config", Detail: err.Error(), Fix: "correct the config file or the KONSTRUCT_* variable named above"})
		return checks
	}
	a.setLogger(newLogger(a.stderr, "text", "error"))
	all := []config.Part{config.NeedDatabase, config.NeedSecret, config.NeedRedis, config.NeedSlack, config.NeedLLM, config.NeedWorker, config.NeedHTTP}
	if err := cfg.Validate(all...); err != nil {
		add(check{Name: "config", Detail: strings.ReplaceAll(err.Error(), "\n", "; "), Fix: "set the keys named above in the config file or the environment"})
	} else {
		add(check{Name: "config", OK: true, Detail: "file: " + cmp.Or(cfg.File, "(none, environment only)")})
	}

	// Database: reachable, role safe, migrations current.
	var st *store.Store
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
			add(check{Name: "database", Detail: err.Error(), Fix: "check database.url and that PostgreSQL is running and reachable"})
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
			case cur < latest:
				add(check{Name: "migrations", Detail: fmt.Sprintf("database at version %d, binary expects %d", cur, latest), Fix: "run `konstruct migrate`"})
			default:
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
		switch {
		case err != nil:
			add(check{Name: "redis", Detail: err.Error(), Fix: "check redis.url and that Redis is running"})
		case durErr != nil:
			add(check{Name: "redis", OK: true, Detail: "reachable; persistence not checked (CONFIG GET refused): make sure AOF is on and maxmemory-policy is noeviction"})
		case len(dur.Problems()) > 0:
			for _, p := range dur.Problems() {
				detail, fix, _ := strings.Cut(p, "; ")
				add(check{Name: "redis", Detail: detail, Fix: fix})
			}
		default:
			add(check{Name: "redis", OK: true, Detail: fmt.Sprintf("reachable; appendonly %s, maxmemory-policy %s", map[bool]string{true: "yes", false: "no (RDB snapshots)"}[dur.AOF], dur.EvictionPolicy)})
		}
	}

	// Workspaces: each one's tokens.
	if st != nil && cfg.SecretKey != "" {
		ws, err := st.ActiveWorkspaces(ctx)
		switch {
		case err != nil:
			add(check{Name: "workspaces", Detail: err.Error(), Fix: "check secret_key: it must be the key the tokens were stored with"})
		case len(ws) == 0:
			add(check{Name: "workspaces", OK: true, Detail: "none active yet (add one with `konstruct workspace add`)"})
		}
		for _, w := range ws {
			name := "workspace " + w.TeamID
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
