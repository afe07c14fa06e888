package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/bot"
	"github.com/konstruct/konstruct/config"
	"github.com/konstruct/konstruct/migrations"
	"github.com/konstruct/konstruct/secret"
	"github.com/konstruct/konstruct/store"
)

func init() {
	commands = append(commands, newMigrateCmd, newTenantCmd, newAgentCmd, newWorkspaceCmd)
}

// storeFor loads and validates the config a command needs (reporting flagErr
// with it) and opens the store: the start of every admin command.
func (a *app) storeFor(cmd *cobra.Command, flagErr error, parts ...config.Part) (*config.Config, *store.Store, error) {
	cfg, err := a.configAnd(cmd, flagErr, parts...)
	if err != nil {
		return nil, nil, err
	}
	st, err := a.openStore(cmd.Context(), cfg)
	if err != nil {
		return nil, nil, err
	}
	return cfg, st, nil
}

// table starts a table on stdout, the same column layout for every command,
// with its tab-separated header line written; Flush prints it.
func (a *app) table(header string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	return tw
}

// openStore opens the store as the runtime role. The secret box is built
// when secret_key is set; commands that touch tokens require it.
func (a *app) openStore(ctx context.Context, cfg *config.Config) (*store.Store, error) {
	var box *secret.Box
	if cfg.SecretKey != "" {
		b, err := secret.NewBox(cfg.SecretKey, cfg.SecretKeyPrevious...)
		if err != nil {
			return nil, err
		}
		box = b
	}
	return store.Open(ctx, cfg.Database.URL, box, a.logger)
}

func newMigrateCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply database migrations and grant the runtime role what it needs",
		Long: "Applies the embedded migrations as database.migrate_url (the owner role; defaults to database.url)\n" +
			"and grants the runtime role (the user of database.url) exactly the privileges it needs.\n" +
			"Idempotent and safe to run concurrently.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.config(cmd, config.NeedDatabase)
			if err != nil {
				return err
			}
			if err := migrations.Up(cmd.Context(), cfg.Database.MigrateURL, cfg.Database.URL, a.logger); err != nil {
				return fmt.Errorf("migrate: %w", err)
			}
			fmt.Fprintln(a.stderr, "migrations applied")
			return nil
		},
	}
}

func newTenantCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "tenant", Short: "Create and list tenants"}
	var name, slug string
	create := &cobra.Command{
		Use:   "create --name NAME [--slug SLUG]",
		Short: "Create a tenant and print its id",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var flagErr error
			if strings.TrimSpace(name) == "" {
				flagErr = fmt.Errorf("tenant create: --name is required")
			}
			_, st, err := a.storeFor(cmd, flagErr, config.NeedDatabase)
			if err != nil {
				return err
			}
			defer st.Close()
			t, err := st.CreateTenant(cmd.Context(), strings.TrimSpace(name), strings.TrimSpace(slug))
			if err != nil {
				return fmt.Errorf("tenant create: %w", err)
			}
			fmt.Fprintln(a.stdout, t.ID)
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "", "tenant name (required)")
	create.Flags().StringVar(&slug, "slug", "", "short unique name (default: derived from --name)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List tenants",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, st, err := a.storeFor(cmd, nil, config.NeedDatabase)
			if err != nil {
				return err
			}
			defer st.Close()
			ts, err := st.ListTenants(cmd.Context())
			if err != nil {
				return fmt.Errorf("tenant list: %w", err)
			}
			tw := a.table("ID\tSLUG\tNAME\tCREATED")
			for _, t := range ts {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Slug, t.Name, t.CreatedAt.UTC().Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(create, list)
	return cmd
}

func newAgentCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "agent", Short: "Configure a tenant's AI employee"}
	var tenant string
	var ag konstruct.Agent
	set := &cobra.Command{
		Use:   "set --tenant ID|SLUG --name N --role R --persona P [--model M] [--instructions TEXT] [--providers A,B]",
		Short: "Create or replace the tenant's agent",
		Long: "Creates or replaces the tenant's agent. --providers names the llm.providers the tenant's\n" +
			"questions may reach, in the order they are tried (default: every configured provider):\n" +
			"a tenant that must stay on-prem lists only its on-prem providers, and never falls back\n" +
			"to any other, even when its own are down.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var missing []string
			for _, f := range []struct{ flag, v string }{{"--tenant", tenant}, {"--name", ag.Name}, {"--role", ag.Role}, {"--persona", ag.Persona}} {
				if strings.TrimSpace(f.v) == "" {
					missing = append(missing, f.flag)
				}
			}
			var flagErr error
			if len(missing) > 0 {
				flagErr = fmt.Errorf("agent set: %s required", strings.Join(missing, ", "))
			}
			cfg, st, err := a.storeFor(cmd, flagErr, config.NeedDatabase)
			if err != nil {
				return err
			}
			defer st.Close()
			if err := knownProviders(cfg, ag.Providers); err != nil {
				return fmt.Errorf("agent set: %w", err)
			}
			t, err := st.ResolveTenant(cmd.Context(), tenant)
			if err != nil {
				return fmt.Errorf("agent set: tenant %q: %w", tenant, err)
			}
			ag.TenantID = t.ID
			ag.Active = true
			saved, err := st.SetAgent(cmd.Context(), ag)
			if err != nil {
				return fmt.Errorf("agent set: %w", err)
			}
			fmt.Fprintln(a.stdout, saved.ID)
			return nil
		},
	}
	set.Flags().StringVar(&tenant, "tenant", "", "tenant id or slug (required)")
	set.Flags().StringVar(&ag.Name, "name", "", "the agent's name, e.g. Mara (required)")
	set.Flags().StringVar(&ag.Role, "role", "", "the agent's role, e.g. Customer Support (required)")
	set.Flags().StringVar(&ag.Persona, "persona", "", "how the agent speaks and behaves (required)")
	set.Flags().StringVar(&ag.Model, "model", "", "model to use (default: llm.model)")
	set.Flags().StringVar(&ag.Instructions, "instructions", "", "extra instructions for the system prompt")
	set.Flags().StringSliceVar(&ag.Providers, "providers", nil, "llm.providers names the tenant may use, in fallback order (default: all)")
	cmd.AddCommand(set)
	return cmd
}

// knownProviders refuses provider names that llm.providers (or the single
// provider of llm.base_url, named "default") does not configure: a typo
// would otherwise fail every one of the tenant's questions.
func knownProviders(cfg *config.Config, names []string) error {
	var known []string
	for _, p := range cfg.Providers() {
		known = append(known, p.Name)
	}
	for _, n := range names {
		if n = strings.TrimSpace(n); !slices.Contains(known, n) {
			return konstruct.Errorf(konstruct.EINVALID, "--providers: no provider %q in llm.providers (configured: %s)", n, strings.Join(known, ", "))
		}
	}
	return nil
}

func newWorkspaceCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "workspace", Short: "Connect Slack workspaces to tenants"}
	var tenant, appToken, botToken string
	add := &cobra.Command{
		Use:   "add --tenant ID|SLUG --app-token xapp-… --bot-token xoxb-…",
		Short: "Check the tokens with Slack, store them encrypted and print the team id",
		Long: "Checks the bot token with auth.test (learning the team id and bot user id) and the app-level\n" +
			"token with apps.connections.open, then stores both encrypted. A running daemon connects within 10 s.\n" +
			"The tokens may also come from SLACK_APP_TOKEN and SLACK_BOT_TOKEN, which keeps them out of `ps`.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			appToken = strings.TrimSpace(cmp.Or(appToken, a.getenv("SLACK_APP_TOKEN")))
			botToken = strings.TrimSpace(cmp.Or(botToken, a.getenv("SLACK_BOT_TOKEN")))
			var missing []error
			if tenant == "" {
				missing = append(missing, fmt.Errorf("workspace add: --tenant is required"))
			}
			if appToken == "" {
				missing = append(missing, fmt.Errorf("workspace add: --app-token is required (an app-level token, xapp-…)"))
			}
			if botToken == "" {
				missing = append(missing, fmt.Errorf("workspace add: --bot-token is required (a bot token, xoxb-…)"))
			}
			cfg, st, err := a.storeFor(cmd, errors.Join(missing...), config.NeedDatabase, config.NeedSecret, config.NeedSlack)
			if err != nil {
				return err
			}
			defer st.Close()
			ctx := cmd.Context()
			t, err := st.ResolveTenant(ctx, tenant)
			if err != nil {
				return fmt.Errorf("workspace add: tenant %q: %w", tenant, err)
			}
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			id, err := bot.AuthTest(cctx, nil, cfg.Slack.APIURL, botToken)
			if err != nil {
				return fmt.Errorf("workspace add: bot token: %w", err)
			}
			if err := bot.CheckAppToken(cctx, nil, cfg.Slack.APIURL, appToken); err != nil {
				return fmt.Errorf("workspace add: app token: %w", err)
			}
			w, err := st.AddWorkspace(ctx, konstruct.Workspace{
				TenantID:     t.ID,
				TeamID:       id.TeamID,
				TeamName:     id.TeamName,
				EnterpriseID: id.EnterpriseID,
				BotUserID:    id.BotUserID,
				BotID:        id.BotID,
				AppToken:     appToken,
				BotToken:     botToken,
				Status:       konstruct.WorkspaceActive,
			})
			if err != nil {
				return fmt.Errorf("workspace add: %w", err)
			}
			fmt.Fprintln(a.stdout, w.TeamID)
			return nil
		},
	}
	add.Flags().StringVar(&tenant, "tenant", "", "tenant id or slug (required)")
	add.Flags().StringVar(&appToken, "app-token", "", "app-level token with connections:write (xapp-…)")
	add.Flags().StringVar(&botToken, "bot-token", "", "bot token (xoxb-…)")

	remove := &cobra.Command{
		Use:   "remove TEAM_ID",
		Short: "Disconnect a workspace (a running daemon closes its sockets within 10 s)",
		Args:  exactArgs(1, "one TEAM_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, st, err := a.storeFor(cmd, nil, config.NeedDatabase)
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.RemoveWorkspace(cmd.Context(), args[0]); err != nil {
				return fmt.Errorf("workspace remove %s: %w", args[0], err)
			}
			fmt.Fprintf(a.stderr, "workspace %s removed\n", args[0])
			return nil
		},
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List workspaces (tokens are never printed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, st, err := a.storeFor(cmd, nil, config.NeedDatabase)
			if err != nil {
				return err
			}
			defer st.Close()
			ws, err := st.ListWorkspaces(cmd.Context())
			if err != nil {
				return fmt.Errorf("workspace list: %w", err)
			}
			tw := a.table("TEAM_ID\tTEAM\tTENANT\tBOT_USER\tSTATUS\tUPDATED")
			for _, w := range ws {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", w.TeamID, dash(w.TeamName), w.TenantID, w.BotUserID, w.Status, w.UpdatedAt.UTC().Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	rekey := &cobra.Command{
		Use:   "rekey",
		Short: "Re-encrypt every workspace's tokens with the current secret_key",
		Long: "Key rotation: set the new key as secret_key and the old one in secret_key_previous, run\n" +
			"`konstruct workspace rekey`, then remove the old key from secret_key_previous.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, st, err := a.storeFor(cmd, nil, config.NeedDatabase, config.NeedSecret)
			if err != nil {
				return err
			}
			defer st.Close()
			n, err := st.RekeyWorkspaces(cmd.Context())
			if err != nil {
				return fmt.Errorf("workspace rekey: %w", err)
			}
			fmt.Fprintf(a.stderr, "%d workspace(s) re-encrypted with key %s\n", n, secretKeyID(cfg.SecretKey))
			return nil
		},
	}
	cmd.AddCommand(add, remove, list, rekey)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func secretKeyID(key string) string {
	b, err := secret.NewBox(key)
	if err != nil {
		return "?"
	}
	return b.CurrentKeyID()
}
