package main

import (
	"github.com/spf13/cobra"

	"github.com/konstruct/konstruct/slacksim"
)

func newSlacksimCmd(a *app) *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "slacksim [--addr 127.0.0.1:PORT]",
		Short: "Run the Slack emulator (Socket Mode + Web API) for trying Konstruct without Slack",
		Long: "Starts the emulator, seeds one workspace and prints api_url=, team_id=, app_token= and bot_token=,\n" +
			"one per line. Point slack.api_url at api_url and add the workspace with the printed tokens.\n" +
			"Post as a human with POST /_sim/post and read a thread with GET /_sim/thread (see the slacksim package doc).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return slacksim.RunStandalone(cmd.Context(), addr, a.stdout)
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:0", "listen address (loopback by default)")
	return cmd
}
