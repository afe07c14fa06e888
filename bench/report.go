package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// writeReport prints the readable table, then the whole report as one JSON line.
func writeReport(out io.Writer, rep Report) {
	if !rep.LimitsOnly {
		writeMain(out, rep)
		fmt.Fprintf(out, "\nIntegrity: %d mentions, %d duplicate answers, %d lost\n", rep.Mentions, rep.Duplicates, rep.Lost)
		if rep.Duplicates > 0 || rep.Lost > 0 {
			bar := strings.Repeat("!", 72)
			fmt.Fprintf(out, "%s\n!! FAILED: %d duplicate and %d lost answers\n", bar, rep.Duplicates, rep.Lost)
			for _, l := range rep.LostDetail {
				fmt.Fprintf(out, "!!   lost: %s\n", l)
			}
			fmt.Fprintln(out, bar)
		}
	}
	if rep.Limits != nil {
		writeLimits(out, rep.Limits)
	}
	fmt.Fprintf(out, "logs and profiles: %s (%.0f s)\n\n", rep.OutDir, rep.ElapsedSeconds)
	b, _ := json.Marshal(rep)
	fmt.Fprintf(out, "%s\n", b)
}

// writeMain prints the tables of every phase but the Slack-limits ones.
func writeMain(out io.Writer, rep Report) {
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

// writeLimits prints the Slack-limits phases and their goals (issue 13).
func writeLimits(out io.Writer, l *Limits) {
	fmt.Fprintln(out, "\nSlack's limits enforced (slacksim answers 429 + Retry-After past Slack's tiers; the daemon on its default budgets)")
	if l.Error != "" {
		fmt.Fprintf(out, "  FAILED: %s\n", l.Error)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	goal := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "NO"
	}
	if re := l.Realistic; re != nil {
		fmt.Fprintf(out, "Realistic: %d env/s over %d workspaces for %.0f s, %.0f%% mentions\n", re.Rate, re.Workspaces, re.Seconds, re.MentionShare*100)
		fmt.Fprintln(tw, "sent/s\tenvelopes\tacked\tredelivered\tack p50 ms\tack p99 ms\tack max ms\tanswered\tfeedback p99 ms\toverhead p50 ms\toverhead p99 ms\tchatter answered\t")
		fmt.Fprintf(tw, "%.0f\t%d\t%d\t%d\t%.3f\t%.3f\t%.3f\t%d/%d\t%.1f\t%.1f\t%.1f\t%d/%d\t\n", re.Actual, re.Sent, re.Acked, re.Redeliveries,
			re.Ack.P50, re.Ack.P99, re.Ack.Max, re.Answered, re.Mentions, re.Feedback.P99, re.Overhead.P50, re.Overhead.P99, re.ChatterAnswered, re.Chatter)
		tw.Flush()
		if ref := re.Reference; ref != nil {
			fmt.Fprintf(out, "  same load, slack-go clients that only ack (right after): sent %.0f/s, acked %d/%d, ack p50 %.3f p99 %.3f max %.3f ms\n",
				ref.Actual, ref.Acked, ref.Sent, ref.Ack.P50, ref.Ack.P99, ref.Ack.Max)
		}
		fmt.Fprintf(out, "  429s: %s; load average %.1f\n", re.RateLimited, re.LoadAvg)
		if len(re.Stages) > 0 {
			var parts []string
			for _, st := range re.Stages {
				parts = append(parts, fmt.Sprintf("%s %.1f ms (n %d)", st.Stage, st.MeanMs, st.N))
			}
			fmt.Fprintf(out, "  the daemon's means: %s\n", strings.Join(parts, "; "))
		}
		fmt.Fprintf(out, "  goals: ack p99 ≤ 1 ms %s; feedback p99 ≤ 25 ms %s; overhead p99 ≤ 30 ms %s; no 429s %s; no answer to chatter %s\n",
			goal(re.Ack.P99 <= 1), goal(re.Feedback.P99 <= 25), goal(re.Overhead.P99 <= 30), goal(re.RateLimited.Total() == 0 && re.RateLimited.daemonTotal() == 0),
			goal(re.ChatterAnswered == 0))
	}
	var bursts []*Burst
	for _, b := range []*Burst{l.Burst, l.Shared} {
		if b != nil {
			bursts = append(bursts, b)
		}
	}
	if len(bursts) > 0 {
		b0 := bursts[0]
		fmt.Fprintf(out, "\nBurst: %d mentions in %.0f s into one workspace, over %d channels from %d people\n", b0.Mentions, b0.Seconds, b0.Channels, b0.People)
		fmt.Fprintln(tw, "processes\tanswered once\tcompletion p50 s\tp99 s\tmax s\tfeedback p99 ms\tqueued placeholders\tposted anew\tplaceholder gone after p50 s\tp99 s\tmax s\tleft\tall clean after s\t429s\t")
		for _, b := range bursts {
			fmt.Fprintf(tw, "%s\t%d/%d\t%.2f\t%.2f\t%.2f\t%.1f\t%d\t%d\t%.2f\t%.2f\t%.2f\t%d\t%.1f\t%d\t\n", b.Processes, b.AnsweredOnce, b.Mentions,
				b.Completion.P50/1000, b.Completion.P99/1000, b.Completion.Max/1000, b.Feedback.P99, b.Queued, b.PostedAnew,
				b.Linger.P50/1000, b.Linger.P99/1000, b.Linger.Max/1000, b.PlaceholdersLeft, b.CleanSeconds, b.RateLimited.Total())
		}
		tw.Flush()
		for _, b := range bursts {
			fmt.Fprintf(out, "  %s: 429s %s; calls %s; load average %.1f\n", b.Processes, b.RateLimited, methods(b.RateLimited.Calls), b.LoadAvg)
			if b.Error != "" {
				fmt.Fprintf(out, "  %s: FAILED: %s\n", b.Processes, b.Error)
			}
			if len(b.UpdatesByWorker) > 0 {
				total := 0
				for _, n := range b.UpdatesByWorker {
					total += n
				}
				fmt.Fprintf(out, "  %s: chat.update calls by worker %v, %d in all over %.1f s; Slack allows one workspace %.0f (%d + %d/min); chat.update 429s: %d\n",
					b.Processes, b.UpdatesByWorker, total, b.UpdateSpan, b.UpdateAllowance, slackUpdateBurst, slackUpdatePerMinute, b.RateLimited.Slack["chat.update"])
			}
			fmt.Fprintf(out, "  %s goals: all answered once %s; completion p99 ≤ 30 s %s; ≤ 6 Slack 429s %s; no placeholder left %s\n", b.Processes,
				goal(b.AnsweredOnce == b.Mentions), goal(b.Completion.N > 0 && b.Completion.P99 <= 30000), goal(b.RateLimited.Total() <= 6), goal(b.PlaceholdersLeft == 0))
		}
	}
	if n := l.Noisy; n != nil {
		fmt.Fprintf(out, "\nNoisy neighbours: %d quiet tenants asking %.0f/s in all (model %.0f ms); %d tenants flooding at %.0f mentions/s each over %d channels (model %.1f s); llm.max_concurrency %d, worker.concurrency %d\n",
			n.QuietTenants, n.QuietRate, n.QuietLLMMs, n.FloodTenants, n.FloodRate, n.FloodChannels, n.FloodLLMMs/1000, n.LLMSlots, n.Workers)
		if n.Error != "" {
			fmt.Fprintf(out, "  FAILED: %s\n", n.Error)
		}
		fmt.Fprintln(tw, "quiet tenants\twindow s\tquestions\tanswered\tanswer p50 ms\tp99 ms\tfeedback p50 ms\tp99 ms\tLLM in flight quiet\tflood (peak)\tflood answered\tslot wait mean ms\t")
		for _, w := range []struct {
			name string
			w    NoisyWindow
		}{{"alone", n.Alone}, {"during the flood", n.During}} {
			fmt.Fprintf(tw, "%s\t%.1f\t%d\t%d\t%.0f\t%.0f\t%.1f\t%.1f\t%.1f\t%.1f (%d)\t%d\t%.1f\t\n", w.name, w.w.Seconds, w.w.Questions, w.w.Answered,
				w.w.Answer.P50, w.w.Answer.P99, w.w.Feedback.P50, w.w.Feedback.P99, w.w.LLMQuiet.Mean, w.w.LLMFlood.Mean, w.w.LLMFlood.Peak, w.w.FloodAnswered, w.w.SlotWaitMs)
		}
		tw.Flush()
		fmt.Fprintf(out, "  flood: %d/%d answered, the last %.1f s after the flood; %d lost, %d duplicates, %d threads still showing a placeholder; 429s %s; load average %.1f\n",
			n.FloodAnswered, n.FloodMentions, n.FloodDrainSeconds, n.Lost, n.Duplicates, n.PlaceholdersLeft, n.RateLimited, n.LoadAvg)
		p50, fb := ratio(n.During.Answer.P50, n.Alone.Answer.P50), ratio(n.During.Feedback.P99, n.Alone.Feedback.P99)
		fmt.Fprintf(out, "  goals: quiet answer p50 within 1.5× of alone %s (%.2f×); feedback p99 within 2× %s (%.2f×); nothing lost %s\n",
			goal(p50 <= 1.5), p50, goal(fb <= 2), fb, goal(n.Lost == 0 && n.Duplicates == 0 && n.During.Answered == n.During.Questions && n.Alone.Answered == n.Alone.Questions))
	}
	if l.ProfileTop != "" {
		fmt.Fprintf(out, "\n%s", l.ProfileTop)
	}
	fmt.Fprintf(out, "\nIntegrity (Slack-limits phases): %d mentions, %d duplicate answers, %d lost\n", l.Mentions, l.Duplicates, l.Lost)
	if l.Duplicates > 0 || l.Lost > 0 {
		bar := strings.Repeat("!", 72)
		fmt.Fprintf(out, "%s\n!! FAILED: %d duplicate and %d lost answers\n", bar, l.Duplicates, l.Lost)
		for _, d := range l.LostDetail {
			fmt.Fprintf(out, "!!   lost: %s\n", d)
		}
		fmt.Fprintln(out, bar)
	}
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return math.Round(a/b*100) / 100
}

// String is "slacksim: chat.update 3, chat.delete 1 / daemon: …" ("none" for none).
func (rl RateLimited) String() string {
	return "slacksim " + methods(rl.Slack) + " / daemon " + methods(rl.Daemon)
}

func (rl RateLimited) daemonTotal() int {
	n := 0
	for _, v := range rl.Daemon {
		n += v
	}
	return n
}

// methods lists counts by method, sorted ("none" for none).
func methods(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
