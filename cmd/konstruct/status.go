package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/konstruct/konstruct/bot"
	"github.com/konstruct/konstruct/config"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/store"
)

func init() { commands = append(commands, newStatusCmd) }

// statusWindow is the recent window of the answers and errors columns.
const statusWindow = time.Hour

// statusReport is what `konstruct status` shows (and prints with --json).
type statusReport struct {
	Time   time.Time    `json:"time"`
	Daemon statusDaemon `json:"daemon"`
	Queue  *statusQueue `json:"queue,omitempty"`
	// QueueError, DatabaseError: why that part is missing.
	QueueError    string            `json:"queue_error,omitempty"`
	DatabaseError string            `json:"database_error,omitempty"`
	Workspaces    []statusWorkspace `json:"workspaces"`
}

type statusDaemon struct {
	URL       string `json:"url"`
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	Ready     bool   `json:"ready"`
	Postgres  string `json:"postgres,omitempty"`
	Redis     string `json:"redis,omitempty"`
	Gateway   string `json:"gateway,omitempty"`
}

type statusQueue struct {
	Name       string `json:"name"`
	Waiting    int    `json:"waiting"` // for their tenant's turn at the workers
	Pending    int    `json:"pending"`
	Active     int    `json:"active"`
	Scheduled  int    `json:"scheduled"`
	Retry      int    `json:"retry"`
	Archived   int    `json:"archived"`
	Processed  int    `json:"processed_today"`
	Failed     int    `json:"failed_today"`
	OldestWait string `json:"oldest_waiting"`
	Partial    bool   `json:"partial,omitempty"`
	Paused     bool   `json:"paused,omitempty"`
}

type statusWorkspace struct {
	TeamID   string `json:"team_id"`
	TeamName string `json:"team_name,omitempty"`
	Tenant   string `json:"tenant"`
	Status   string `json:"status"`
	// Sockets: "connected", "degraded", "disconnected", "revoked";
	// "starting" or "not served" when the daemon has no socket for it
	// (yet); "unknown" when the daemon did not answer.
	Sockets     string    `json:"sockets"`
	Connected   int       `json:"connected"`
	Connections int       `json:"connections"`
	SocketError string    `json:"socket_error,omitempty"`
	Queued      int       `json:"queued"`
	Running     int       `json:"running"`
	InFlight    int       `json:"in_flight"`
	LastAnswer  time.Time `json:"last_answer,omitzero"`
	Answers     int       `json:"answers_1h"`
	Errors      int       `json:"errors_1h"`
}

func newStatusCmd(a *app) *cobra.Command {
	var (
		url    string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status [--json] [--url URL]",
		Short: "One screen: per workspace its sockets, queued replies, replies in flight, last answer and errors in the last hour",
		Long: "Reads the running daemon's /readyz at http.addr (or --url) for the sockets, Redis for the reply queue\n" +
			"and the replies in flight, and PostgreSQL for each workspace's last answer and its answers and errors\n" +
			"of the last hour. Exits non-zero, after printing what it could read, when the daemon does not answer,\n" +
			"is not ready, or Redis or PostgreSQL cannot be read.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.config(cmd, config.NeedDatabase, config.NeedRedis)
			if err != nil {
				return err
			}
			if url == "" {
				url = strings.TrimSuffix(a.healthURL(cmd), "/healthz") + "/readyz"
			}
			rep := a.status(cmd.Context(), cfg, url)
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else if err := a.printStatus(rep); err != nil {
				return err
			}
			return rep.problem()
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "the daemon's readiness endpoint (default: /readyz at http.addr)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// status gathers the report; each source that fails is noted, not fatal.
func (a *app) status(ctx context.Context, cfg *config.Config, url string) statusReport {
	rep := statusReport{Time: time.Now().UTC(), Daemon: statusDaemon{URL: url}}
	sockets := map[string]bot.SocketState{}
	if rd, err := fetchReadiness(ctx, url); err != nil {
		rep.Daemon.Error = errorLine(err)
	} else {
		rep.Daemon.Reachable, rep.Daemon.Ready = true, rd.Ready
		rep.Daemon.Postgres, rep.Daemon.Redis, rep.Daemon.Gateway = rd.Postgres, rd.Redis, rd.Gateway
		for _, s := range rd.Workspaces {
			sockets[s.TeamID] = s
		}
	}

	var (
		backlog  queue.Backlog
		inFlight map[string]int
	)
	if q, err := queue.Open(cfg.Queue()); err != nil {
		rep.QueueError = errorLine(err)
	} else {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		info, err := q.Info(qctx)
		if err == nil {
			backlog, err = q.Backlog(qctx, 0)
		}
		if err == nil {
			inFlight, err = q.InFlight(qctx)
		}
		cancel()
		_ = q.Close()
		if err != nil {
			rep.QueueError = errorLine(err)
		} else {
			rep.Queue = &statusQueue{Name: info.Name, Waiting: backlog.Waiting, Pending: info.Pending, Active: info.Active, Scheduled: info.Scheduled,
				Retry: info.Retry, Archived: info.Archived, Processed: info.Processed, Failed: info.Failed,
				OldestWait: backlog.Oldest.Round(time.Second).String(), Partial: backlog.Partial, Paused: info.Paused}
		}
	}

	var activity []store.WorkspaceActivity
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if st, err := store.Open(dctx, cfg.Database.URL, nil, a.logger); err != nil {
		rep.DatabaseError = errorLine(err)
	} else {
		activity, err = st.WorkspaceActivity(dctx, statusWindow)
		st.Close()
		if err != nil {
			rep.DatabaseError = errorLine(err)
		}
	}

	for _, w := range activity {
		sw := statusWorkspace{TeamID: w.TeamID, TeamName: w.TeamName, Tenant: w.TenantSlug, Status: string(w.Status),
			LastAnswer: w.LastAnswer, Answers: w.Answers, Errors: w.Errors, Sockets: "unknown",
			Queued: backlog.Teams[w.TeamID].Queued, Running: backlog.Teams[w.TeamID].Running, InFlight: inFlight[w.TeamID]}
		if s, ok := sockets[w.TeamID]; ok {
			sw.Connected, sw.Connections, sw.SocketError = s.Connected, s.Connections, s.LastError
			switch {
			case s.Revoked:
				sw.Sockets = "revoked"
			case s.Skipped:
				sw.Sockets = "skipped"
			case s.Connected == 0:
				sw.Sockets = "disconnected"
			case s.Connected < s.Connections:
				sw.Sockets = "degraded"
			default:
				sw.Sockets = "connected"
			}
		} else if rep.Daemon.Reachable {
			// The gateway is still loading its workspaces, or this
			// daemon runs no gateway (`konstruct worker`).
			sw.Sockets = cmp.Or(rep.Daemon.Gateway, "not served")
		}
		rep.Workspaces = append(rep.Workspaces, sw)
	}
	return rep
}

// fetchReadiness reads the daemon's /readyz (200 or 503, both with a body).
func fetchReadiness(ctx context.Context, url string) (readiness, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return readiness{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return readiness{}, fmt.Errorf("nothing listens at %s: is the daemon running? (systemctl status konstruct; http.addr must be the daemon's)", url)
		}
		return readiness{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return readiness{}, err
	}
	var rd readiness
	if err := json.Unmarshal(body, &rd); err != nil {
		return readiness{}, fmt.Errorf("%s answered %s without readiness JSON: is http.addr the daemon's?", url, resp.Status)
	}
	return rd, nil
}

func (a *app) printStatus(rep statusReport) error {
	w := a.stdout
	d := rep.Daemon
	switch {
	case !d.Reachable:
		fmt.Fprintf(w, "daemon     not answering: %s\n", d.Error)
	default:
		state := "ready"
		if !d.Ready {
			state = "NOT READY"
		}
		fmt.Fprintf(w, "daemon     %s at %s (postgres %s, redis %s)\n", state, strings.TrimSuffix(d.URL, "/readyz"), d.Postgres, d.Redis)
		if d.Gateway != "" {
			fmt.Fprintf(w, "           gateway %s\n", d.Gateway)
		}
	}
	if q := rep.Queue; q != nil {
		paused := ""
		if q.Paused {
			paused = " (PAUSED)"
		}
		fmt.Fprintf(w, "queue      %s%s: %d waiting their turn, %d pending, %d active, %d deferred, %d retry, %d archived; oldest waiting %s; today %d done, %d failed\n",
			q.Name, paused, q.Waiting, q.Pending, q.Active, q.Scheduled, q.Retry, q.Archived, q.OldestWait, q.Processed, q.Failed)
	} else {
		fmt.Fprintf(w, "queue      cannot be read: %s\n", rep.QueueError)
	}
	if rep.DatabaseError != "" {
		fmt.Fprintf(w, "database   cannot be read: %s\n", rep.DatabaseError)
		return nil
	}
	fmt.Fprintln(w)
	if len(rep.Workspaces) == 0 {
		fmt.Fprintln(w, "no workspace yet: add one with `konstruct workspace add --tenant … --app-token xapp-… --bot-token xoxb-…`")
		return nil
	}
	tw := a.table("WORKSPACE\tNAME\tTENANT\tSOCKETS\tQUEUED\tIN FLIGHT\tLAST ANSWER\tANSWERS 1H\tERRORS 1H")
	var notes []string
	for _, s := range rep.Workspaces {
		sockets := s.Sockets
		switch s.Sockets {
		case "connected", "degraded", "disconnected":
			sockets = fmt.Sprintf("%d/%d %s", s.Connected, s.Connections, s.Sockets)
		}
		if s.Status != "active" {
			sockets = s.Status
		}
		if s.SocketError != "" && s.Sockets != "connected" {
			notes = append(notes, fmt.Sprintf("%s: %s", s.TeamID, s.SocketError))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%d\t%d\n", s.TeamID, cmp.Or(s.TeamName, "-"), s.Tenant, sockets,
			s.Queued, s.InFlight, ago(rep.Time, s.LastAnswer), s.Answers, s.Errors)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(w, "  last socket error of "+n)
	}
	return nil
}

// problem is the one line status exits non-zero with, nil when all is well.
func (rep statusReport) problem() error {
	var probs []string
	switch {
	case !rep.Daemon.Reachable:
		probs = append(probs, "the daemon does not answer")
	case !rep.Daemon.Ready:
		var down []string
		for _, w := range rep.Workspaces {
			if w.Status == "active" && w.Sockets != "connected" && w.Sockets != "degraded" {
				down = append(down, w.TeamID)
			}
		}
		slices.Sort(down)
		msg := "the daemon is not ready"
		if len(down) > 0 {
			msg += " (no socket: " + strings.Join(down, ", ") + ")"
		}
		probs = append(probs, msg)
	}
	if rep.QueueError != "" {
		probs = append(probs, "Redis cannot be read")
	}
	if rep.DatabaseError != "" {
		probs = append(probs, "PostgreSQL cannot be read")
	}
	if len(probs) == 0 {
		return nil
	}
	return fmt.Errorf("status: %s", strings.Join(probs, "; "))
}

// ago renders a past time for a table: "12s ago", "3m ago", "5h ago", a
// date beyond two days, "never" for the zero time.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", max(int(d.Seconds()), 0))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return t.UTC().Format("2006-01-02")
}
