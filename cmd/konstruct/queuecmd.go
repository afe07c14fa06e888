package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/konstruct/konstruct/config"
	"github.com/konstruct/konstruct/queue"
)

func init() { commands = append(commands, newQueueCmd) }

func newQueueCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "queue",
		Short: "Inspect the reply queue and retry or archive its tasks",
		Long: "The reply queue is the asynq queue redis.prefix + \"replies\" in redis.url; each task answers one\n" +
			"Slack post and its id is reply:TENANT:TEAM:CHANNEL:TS. A job first waits for its tenant's turn at the\n" +
			"workers (WAITING); once admitted it is a task. asynqmon pointed at the same Redis shows the tasks too.",
	}
	cmd.AddCommand(newQueueStatsCmd(a), newQueueListCmd(a), newQueueRetryCmd(a), newQueueArchiveCmd(a))
	return cmd
}

// openQueue loads the config a queue command needs and opens the queue.
func (a *app) openQueue(cmd *cobra.Command, flagErr error) (*queue.Queue, error) {
	cfg, err := a.configAnd(cmd, flagErr, config.NeedRedis)
	if err != nil {
		return nil, err
	}
	return queue.Open(cfg.Queue())
}

func newQueueStatsCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats [--json]",
		Short: "Tasks by state, today's finished and failed runs, the oldest wait, and the backlog per workspace",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := a.openQueue(cmd, nil)
			if err != nil {
				return err
			}
			defer q.Close()
			ctx := cmd.Context()
			info, err := q.Info(ctx)
			if err != nil {
				return fmt.Errorf("queue stats: %w", err)
			}
			b, err := q.Backlog(ctx, 0)
			if err != nil {
				return fmt.Errorf("queue stats: %w", err)
			}
			if asJSON {
				type team struct {
					TeamID  string `json:"team_id"`
					Queued  int    `json:"queued"`
					Running int    `json:"running"`
				}
				out := struct {
					Queue          string  `json:"queue"`
					Waiting        int     `json:"waiting"`
					Pending        int     `json:"pending"`
					Active         int     `json:"active"`
					Scheduled      int     `json:"scheduled"`
					Retry          int     `json:"retry"`
					Archived       int     `json:"archived"`
					Completed      int     `json:"completed"`
					Processed      int     `json:"processed_today"`
					Failed         int     `json:"failed_today"`
					ProcessedTotal int     `json:"processed_total"`
					FailedTotal    int     `json:"failed_total"`
					OldestSeconds  float64 `json:"oldest_waiting_seconds"`
					Paused         bool    `json:"paused"`
					MemoryBytes    int64   `json:"memory_bytes"`
					Teams          []team  `json:"teams"`
				}{Queue: info.Name, Waiting: b.Waiting, Pending: info.Pending, Active: info.Active, Scheduled: info.Scheduled, Retry: info.Retry,
					Archived: info.Archived, Completed: info.Completed, Processed: info.Processed, Failed: info.Failed,
					ProcessedTotal: info.ProcessedTotal, FailedTotal: info.FailedTotal, OldestSeconds: b.Oldest.Seconds(),
					Paused: info.Paused, MemoryBytes: info.MemoryBytes, Teams: []team{}}
				for _, id := range sortedKeys(b.Teams) {
					out.Teams = append(out.Teams, team{TeamID: id, Queued: b.Teams[id].Queued, Running: b.Teams[id].Running})
				}
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			tw := a.table("QUEUE\tWAITING\tPENDING\tACTIVE\tDEFERRED\tRETRY\tARCHIVED\tCOMPLETED\tDONE TODAY\tFAILED TODAY\tOLDEST WAITING")
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", info.Name, b.Waiting, info.Pending, info.Active, info.Scheduled,
				info.Retry, info.Archived, info.Completed, info.Processed, info.Failed, b.Oldest.Round(time.Second))
			if err := tw.Flush(); err != nil {
				return err
			}
			if info.Paused {
				fmt.Fprintln(a.stdout, "the queue is PAUSED: no worker takes its tasks (asynqmon, or the asynq CLI: `asynq queue unpause NAME`, resumes it)")
			}
			if len(b.Teams) > 0 {
				fmt.Fprintln(a.stdout)
				tw = a.table("WORKSPACE\tQUEUED\tRUNNING")
				for _, id := range sortedKeys(b.Teams) {
					fmt.Fprintf(tw, "%s\t%d\t%d\n", id, b.Teams[id].Queued, b.Teams[id].Running)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if b.Partial {
					fmt.Fprintln(a.stdout, "(more tasks than were read: the counts per workspace are lower bounds)")
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the figures as JSON")
	return cmd
}

func newQueueListCmd(a *app) *cobra.Command {
	var (
		state  string
		limit  int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "list [--state archived] [--limit 50] [--json]",
		Short: "List the tasks in one state: which post each answers, its runs and last error (never the message)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var flagErr error
			if !slices.Contains(queue.TaskStates, state) {
				flagErr = fmt.Errorf("queue list: --state must be one of %s", strings.Join(queue.TaskStates, ", "))
			}
			q, err := a.openQueue(cmd, flagErr)
			if err != nil {
				return err
			}
			defer q.Close()
			tasks, err := q.Tasks(cmd.Context(), state, limit)
			if err != nil {
				return fmt.Errorf("queue list: %w", err)
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if tasks == nil {
					tasks = []queue.Task{}
				}
				return enc.Encode(tasks)
			}
			if len(tasks) == 0 {
				fmt.Fprintf(a.stdout, "no %s task\n", state)
				return nil
			}
			now := time.Now()
			tw := a.table("TASK\tWORKSPACE\tCHANNEL\tENQUEUED\tRUNS FAILED\tNEXT RUN\tLAST ERROR")
			for _, t := range tasks {
				next := "-"
				if !t.NextRun.IsZero() && (state == queue.StateRetry || state == queue.StateScheduled) {
					next = "in " + max(t.NextRun.Sub(now), 0).Round(time.Second).String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", t.ID, t.Post.TeamID, t.Post.ChannelID, ago(now, t.EnqueuedAt),
					t.Retried, t.MaxRetry+1, next, oneLine(t.LastError, 80))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&state, "state", queue.StateArchived, "task state: "+strings.Join(queue.TaskStates, ", "))
	cmd.Flags().IntVar(&limit, "limit", 50, "list at most this many")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the tasks as JSON")
	return cmd
}

func newQueueRetryCmd(a *app) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "retry TASK_ID... | --all",
		Short: "Run archived or retrying tasks now",
		Long: "Moves the tasks back to pending, so a worker runs them at once. --all takes every archived and\n" +
			"retrying task. A reply whose thread already shows its answer or its error text is not written again.",
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := a.openQueue(cmd, idsOrAll("queue retry", args, all))
			if err != nil {
				return err
			}
			defer q.Close()
			if all {
				n, err := q.RetryAll(cmd.Context())
				if err != nil {
					return fmt.Errorf("queue retry: %w", err)
				}
				fmt.Fprintf(a.stdout, "%d tasks run again\n", n)
				return nil
			}
			for _, id := range args {
				if err := q.RetryTask(cmd.Context(), id); err != nil {
					return fmt.Errorf("queue retry: %w", err)
				}
				fmt.Fprintln(a.stdout, id)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "every archived and retrying task")
	return cmd
}

func newQueueArchiveCmd(a *app) *cobra.Command {
	var (
		all    bool
		states []string
	)
	cmd := &cobra.Command{
		Use:   "archive TASK_ID... | --all [--state retry,scheduled,pending]",
		Short: "Stop tasks from running (for a task that keeps failing, or while the LLM is down)",
		Long: "Archives the tasks: no worker runs them until `konstruct queue retry`. Their threads keep the\n" +
			"placeholder meanwhile. --all takes every task in the --state given (default: retry).\n" +
			"A running (active) task cannot be archived.",
		RunE: func(cmd *cobra.Command, args []string) error {
			flagErr := idsOrAll("queue archive", args, all)
			for _, s := range states {
				if s != queue.StateRetry && s != queue.StateScheduled && s != queue.StatePending {
					flagErr = errors.Join(flagErr, fmt.Errorf("queue archive: --state takes retry, scheduled or pending, not %q", s))
				}
			}
			q, err := a.openQueue(cmd, flagErr)
			if err != nil {
				return err
			}
			defer q.Close()
			n := 0
			if all {
				if n, err = q.ArchiveAll(cmd.Context(), states...); err != nil {
					return fmt.Errorf("queue archive: %w", err)
				}
			} else {
				for _, id := range args {
					if err := q.ArchiveTask(cmd.Context(), id); err != nil {
						return fmt.Errorf("queue archive: %w", err)
					}
					n++
				}
			}
			fmt.Fprintf(a.stdout, "%d tasks archived; their threads show the placeholder until `konstruct queue retry`\n", n)
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "every task in the --state given")
	cmd.Flags().StringSliceVar(&states, "state", []string{queue.StateRetry}, "with --all: the states to archive (retry, scheduled, pending)")
	return cmd
}

// idsOrAll checks that a command got task ids or --all, not both.
func idsOrAll(cmd string, ids []string, all bool) error {
	switch {
	case all && len(ids) > 0:
		return fmt.Errorf("%s: give task ids or --all, not both", cmd)
	case !all && len(ids) == 0:
		return fmt.Errorf("%s: give task ids (see `konstruct queue list`) or --all", cmd)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// oneLine shortens s to one line of at most n runes for a table.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "-"
	}
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
