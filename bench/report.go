package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
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
