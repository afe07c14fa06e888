package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// writeReport prints the readable table, then the whole report as one JSON line.
func writeReport(out io.Writer, rep Report) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	m := rep.Machine
	fmt.Fprintf(out, "konstruct bench — %d CPUs, %s, %s, %s; %d workspaces (%d tenants), phases %.1f s, %.0f%% mentions in ack phases, fake LLM %.0f ms per answer\n\n",
		m.CPUs, m.MemTotal, m.GoVersion, m.OS, rep.Setup.Workspaces, rep.Setup.Tenants, rep.Setup.PhaseSeconds, rep.Setup.MentionShare*100, rep.Setup.LLMMillis)

	fmt.Fprintln(out, "Ack latency (slacksim writes the envelope → reads the ack)")
	fmt.Fprintln(tw, "target\tenv/s\tsent/s\trouted/s\tenvelopes\tacked\tredelivered\tp50 ms\tp99 ms\tmax ms\t")
	for _, a := range rep.Ack {
		routed := "-"
		if a.Target == "konstruct" {
			routed = fmt.Sprintf("%.0f", a.Routed)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%d\t%d\t%d\t%.3f\t%.3f\t%.3f\t\n", a.Target, a.Rate, a.Actual, routed, a.Sent, a.Acked, a.Redeliveries, a.Ack.P50, a.Ack.P99, a.Ack.Max)
	}
	tw.Flush()
	if rep.BoltSkipped != "" {
		fmt.Fprintf(out, "  bolt: skipped (%s)\n", rep.BoltSkipped)
	}

	fmt.Fprintln(out, "\nPipeline (mentions only)")
	fmt.Fprintln(tw, "measure\tn\tp50 ms\tp99 ms\tmax ms\t")
	row := func(name string, d Dist) {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t\n", name, d.N, d.P50, d.P99, d.Max)
	}
	row("konstruct: event → first bot write (feedback)", rep.Feedback)
	row("konstruct: event → final answer − LLM time (overhead)", rep.Overhead)
	if rep.BoltFeedback != nil {
		row("bolt: event → its reply", *rep.BoltFeedback)
	}
	row("Redis PING round trip (go-redis)", rep.RedisPing)
	tw.Flush()

	fmt.Fprintf(out, "\nSustained answered rate over %d workspaces (step up until ack p99 > 5 ms or answers fall behind)\n", rep.Setup.StepWorkspaces)
	fmt.Fprintln(tw, "mentions/s\tanswered\tanswered/s\tack p99 ms\tfeedback p99 ms\toverhead p99 ms\tresult\t")
	for _, s := range rep.Steps {
		res := "ok"
		if !s.OK {
			res = "stop: " + s.Why
		}
		fmt.Fprintf(tw, "%d\t%d/%d\t%.1f\t%.3f\t%.1f\t%.1f\t%s\t\n", s.Rate, s.Answered, s.Mentions, s.PerSec, s.Ack.P99, s.Feedback.P99, s.Overhead.P99, res)
	}
	tw.Flush()
	fmt.Fprintf(out, "highest sustained: %.1f answers/s\n", rep.Sustained)

	if d := rep.Durable; d != nil {
		fmt.Fprintf(out, "\nAck with the durable write (a daemon on a private redis-server with AOF; %d workspaces, %.0f%% mentions)\n", d.Workspaces, d.MentionShare*100)
		switch {
		case d.Skipped != "":
			fmt.Fprintf(out, "  skipped: %s\n", d.Skipped)
		default:
			fmt.Fprintln(tw, "intake record in\tenv/s\tsent/s\tenvelopes\tacked\tredelivered\tp50 ms\tp99 ms\tmax ms\t")
			for _, a := range d.Rows {
				fmt.Fprintf(tw, "%s\t%d\t%.0f\t%d\t%d\t%d\t%.3f\t%.3f\t%.3f\t\n", a.Path, a.Rate, a.Actual, a.Sent, a.Acked, a.Redeliveries, a.Ack.P50, a.Ack.P99, a.Ack.Max)
			}
			tw.Flush()
			if len(d.Rows) == 3 {
				fmt.Fprintf(out, "  spool: peak %d records (%d spooled); Redis back → spool empty %.2f s, → last spooled mention answered %.2f s\n",
					d.SpoolPeak, d.Spooled, d.ReplaySeconds, d.AnsweredSeconds)
			}
			if d.Error != "" {
				fmt.Fprintf(out, "  FAILED: %s\n", d.Error)
			}
		}
	}

	fmt.Fprintln(out, "\nProcess")
	fmt.Fprintf(out, "  load daemon: peak RSS %.1f MiB, %.1f s CPU over the run\n", rep.DaemonPeakRSS, rep.DaemonCPUSeconds)
	if rep.BoltPeakRSS > 0 {
		fmt.Fprintf(out, "  bolt peer:   peak RSS %.1f MiB\n", rep.BoltPeakRSS)
	}
	if s := rep.Sockets; s != nil {
		if s.Error != "" {
			fmt.Fprintf(out, "  sockets: FAILED: %s\n", s.Error)
		} else {
			fmt.Fprintf(out, "  sockets: %d workspaces × %d = %d connections open in %.2f s; daemon peak RSS %.1f MiB (now %.1f)\n",
				s.Workspaces, s.Connections/max(1, s.Workspaces), s.Connections, s.ConnectSeconds, s.PeakRSS, s.RSS)
		}
	}
	if rep.ProfileTop != "" {
		fmt.Fprintf(out, "\n%s", rep.ProfileTop)
	}

	fmt.Fprintf(out, "\nIntegrity: %d mentions, %d duplicate answers, %d lost\n", rep.Mentions, rep.Duplicates, rep.Lost)
	if rep.Duplicates > 0 || rep.Lost > 0 {
		bar := strings.Repeat("!", 72)
		fmt.Fprintf(out, "%s\n!! FAILED: %d duplicate and %d lost answers\n", bar, rep.Duplicates, rep.Lost)
		for _, l := range rep.LostDetail {
			fmt.Fprintf(out, "!!   lost: %s\n", l)
		}
		fmt.Fprintln(out, bar)
	}
	fmt.Fprintf(out, "logs and profiles: %s (%.0f s)\n\n", rep.OutDir, rep.ElapsedSeconds)
	b, _ := json.Marshal(rep)
	fmt.Fprintf(out, "%s\n", b)
}

// writeChaosReport prints the chaos run's table, then the report as one JSON line.
func writeChaosReport(out io.Writer, rep ChaosReport) {
	s, m := rep.Setup, rep.Machine
	fmt.Fprintf(out, "konstruct bench --chaos — %d CPUs, %s, %s, %s\n", m.CPUs, m.MemTotal, m.GoVersion, m.OS)
	faults := "no Slack faults"
	if s.Faults {
		faults = fmt.Sprintf("%d refresh disconnects, %d cut sockets", rep.Disconnects, rep.CutSockets)
	}
	fmt.Fprintf(out, "%d workspaces, %d envelopes/s (every %d-th post a mention), fake LLM %.0f ms; %.0f s of load, a %.0f s Redis outage (SIGKILL, AOF), the daemon SIGKILLed %.0f s into it and started again %.0f s later, %.0f s of load after; %s; Slack redelivers after %.0f ms\n\n",
		s.Workspaces, s.Rate, s.MentionEvery, s.LLMMillis, s.WarmupSeconds, s.OutageSeconds, s.KillAtSeconds, s.RestartSeconds, s.AfterSeconds, faults, s.AckTimeoutMilli)

	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mentions\tanswered once\tduplicates\tlost\tof which an error text\tstuck placeholders\tchatter\tchatter answered\t")
	fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", rep.Mentions, rep.AnsweredOnce, rep.Duplicates, rep.Lost, rep.ErrorAnswers, rep.Stuck, rep.Chatter, rep.ChatterAnswered)
	tw.Flush()
	fmt.Fprintf(out, "\nenvelopes %d, never acked %d, redelivered by Slack %d; daemon SIGKILLs %d, restarts %d, exits by itself %d\n",
		rep.Envelopes, rep.Unacked, rep.Redelivered, rep.Kills, rep.Restarts, rep.SelfExits)
	fmt.Fprintf(out, "spool: peak %d records, %d recorded there; Redis back → spool empty %.2f s, → last answer %.2f s\n\n",
		rep.SpoolPeak, rep.Spooled, rep.RedisBackToSpoolEmpty, rep.RedisBackToLastAnswer)

	fmt.Fprintln(out, "Ack latency by when the envelope was first delivered (first delivery → ack, redeliveries included)")
	fmt.Fprintln(tw, "window\tenvelopes\tacked\tredelivered\tp50 ms\tp99 ms\tmax ms\t")
	for _, a := range rep.Acks {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.3f\t%.3f\t%.3f\t\n", a.Window, a.Envelopes, a.Acked, a.Redelivered, a.Ack.P50, a.Ack.P99, a.Ack.Max)
	}
	tw.Flush()

	if len(rep.Slowest) > 0 {
		at := func(t time.Time) string {
			if t.IsZero() {
				return "-"
			}
			return fmt.Sprintf("+%.1fs", t.Sub(rep.Timeline.LoadStart).Seconds())
		}
		tl := rep.Timeline
		fmt.Fprintf(out, "\ntimeline: load %s, Redis down %s, daemon killed %s, restarted %s (sockets back %s), Redis back %s, load end %s\nanswered last:\n",
			at(tl.LoadStart), at(tl.RedisDown), at(tl.Kill), at(tl.Restart), at(tl.Reconnected), at(tl.RedisBack), at(tl.LoadEnd))
		for _, s := range rep.Slowest {
			fmt.Fprintf(out, "  %s\n", s)
		}
	}
	if rep.OK() {
		fmt.Fprintf(out, "\nOK: every mention answered exactly once, nothing stuck, no chatter answered, every envelope acked\n")
	} else {
		bar := strings.Repeat("!", 72)
		fmt.Fprintf(out, "\n%s\n!! FAILED: %d of %d mentions answered once, %d duplicates, %d lost, %d stuck, %d chatter answered, %d never acked\n",
			bar, rep.AnsweredOnce, rep.Mentions, rep.Duplicates, rep.Lost, rep.Stuck, rep.ChatterAnswered, rep.Unacked)
		for _, f := range rep.Failures {
			fmt.Fprintf(out, "!!   %s\n", f)
		}
		fmt.Fprintln(out, bar)
	}
	fmt.Fprintf(out, "logs: %s (%.0f s)\n\n", rep.OutDir, rep.ElapsedSeconds)
	b, _ := json.Marshal(rep)
	fmt.Fprintf(out, "%s\n", b)
}
