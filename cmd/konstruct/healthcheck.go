package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/konstruct/konstruct/config"
)

func init() { commands = append(commands, newHealthcheckCmd) }

// newHealthcheckCmd probes /healthz or /readyz: container images without
// curl use it as their healthcheck.
func newHealthcheckCmd(a *app) *cobra.Command {
	var url string
	cmd := &cobra.Command{
		Use:   "healthcheck [--url URL]",
		Short: "Exit 0 when the daemon's health endpoint answers 200",
		Long:  "Probes /healthz at http.addr (KONSTRUCT_HTTP_ADDR; a wildcard host means this machine), or --url.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if url == "" {
				url = a.healthURL(cmd)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return fmt.Errorf("healthcheck: %w", err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("healthcheck: %w", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("healthcheck: %s answered %s", url, resp.Status)
			}
			fmt.Fprintln(a.stdout, "ok")
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "health endpoint to probe (default: /healthz at http.addr)")
	return cmd
}

// healthURL is /healthz at the configured http.addr.
func (a *app) healthURL(cmd *cobra.Command) string {
	addr := "127.0.0.1:9464"
	if cfg, err := config.Load(config.Options{Path: a.configPath, Getenv: a.getenv, Flags: cmd.Flags()}); err == nil && cfg.HTTP.Addr != "" {
		addr = cfg.HTTP.Addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr + "/healthz"
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz"
}
