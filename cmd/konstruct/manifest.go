package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

func init() { commands = append(commands, newManifestCmd, newSlacksimCmd) }

// Scopes and events the product needs, and nothing more:
//   - app_mentions:read + app_mention: mentions in channels;
//   - channels/groups/im/mpim:history + message.*: DMs, follow-ups in engaged
//     threads, and conversations.replies for thread context;
//   - chat:write: placeholder, chat.update, ephemerals, assistant status, streams;
//   - users:read: speaker names in the thread context.
var (
	manifestScopes = []string{"app_mentions:read", "channels:history", "chat:write", "groups:history", "im:history", "mpim:history", "users:read"}
	manifestEvents = []string{"app_mention", "message.channels", "message.groups", "message.im", "message.mpim"}
)

type manifest struct {
	DisplayInformation struct {
		Name            string `yaml:"name"`
		Description     string `yaml:"description"`
		BackgroundColor string `yaml:"background_color"`
	} `yaml:"display_information"`
	Features struct {
		AppHome struct {
			HomeTabEnabled             bool `yaml:"home_tab_enabled"`
			MessagesTabEnabled         bool `yaml:"messages_tab_enabled"`
			MessagesTabReadOnlyEnabled bool `yaml:"messages_tab_read_only_enabled"`
		} `yaml:"app_home"`
		BotUser struct {
			DisplayName  string `yaml:"display_name"`
			AlwaysOnline bool   `yaml:"always_online"`
		} `yaml:"bot_user"`
	} `yaml:"features"`
	OAuthConfig struct {
		Scopes struct {
			Bot []string `yaml:"bot"`
		} `yaml:"scopes"`
	} `yaml:"oauth_config"`
	Settings struct {
		EventSubscriptions struct {
			BotEvents []string `yaml:"bot_events"`
		} `yaml:"event_subscriptions"`
		Interactivity struct {
			IsEnabled bool `yaml:"is_enabled"`
		} `yaml:"interactivity"`
		OrgDeployEnabled     bool `yaml:"org_deploy_enabled"`
		SocketModeEnabled    bool `yaml:"socket_mode_enabled"`
		TokenRotationEnabled bool `yaml:"token_rotation_enabled"`
	} `yaml:"settings"`
}

// buildManifest returns the Slack app manifest for an AI employee called name.
func buildManifest(name string) ([]byte, error) {
	var m manifest
	m.DisplayInformation.Name = name
	m.DisplayInformation.Description = "AI employee powered by Konstruct (self-hosted). It is an AI, not a person."
	m.DisplayInformation.BackgroundColor = "#1d3557"
	m.Features.AppHome.MessagesTabEnabled = true
	m.Features.BotUser.DisplayName = botDisplayName(name)
	m.Features.BotUser.AlwaysOnline = true
	m.OAuthConfig.Scopes.Bot = manifestScopes
	m.Settings.EventSubscriptions.BotEvents = manifestEvents
	// The 👍/👎 and Stop buttons on answers: their clicks come over the
	// socket as interactive envelopes (no request URL with Socket Mode).
	m.Settings.Interactivity.IsEnabled = true
	m.Settings.SocketModeEnabled = true
	return yaml.Marshal(&m)
}

// botDisplayName makes a display name Slack accepts: lower case, no spaces,
// at most 80 characters.
func botDisplayName(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(name)) {
		switch {
		case r == ' ' || r == '_':
			b.WriteRune('-')
		case r == '-' || r == '.' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'):
			b.WriteRune(r)
		}
	}
	s := b.String()
	if len(s) > 80 {
		s = s[:80]
	}
	if s == "" {
		s = "ai-employee"
	}
	return s
}

func newManifestCmd(a *app) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "manifest --name NAME",
		Short: "Print a Slack app manifest (YAML) with Socket Mode and exactly the scopes and events Konstruct needs",
		Long: "Paste the output at https://api.slack.com/apps → Create New App → From a manifest.\n" +
			"Then create an app-level token with the connections:write scope (Basic Information → App-Level Tokens),\n" +
			"install the app to the workspace, and run `konstruct workspace add` with both tokens.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			name = strings.TrimSpace(name)
			if name == "" {
				return fmt.Errorf("manifest: --name is required")
			}
			if len(name) > 35 {
				return fmt.Errorf("manifest: --name must be at most 35 characters (a Slack limit), got %d", len(name))
			}
			out, err := buildManifest(name)
			if err != nil {
				return fmt.Errorf("manifest: %w", err)
			}
			_, err = a.stdout.Write(out)
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the app's name as people see it in Slack, e.g. Mara (required)")
	return cmd
}
