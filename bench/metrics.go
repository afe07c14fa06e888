package bench

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"
)

// scrape reads a daemon's /metrics: each series (name and labels, as
// written) to its value.
func scrape(ctx context.Context, httpAddr string) (map[string]float64, error) {
	body, err := httpGet(ctx, "http://"+httpAddr+"/metrics", 5*time.Second)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i <= 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, nil
}

// sum adds the series of one metric whose labels contain every one of want
// (e.g. `sink="spool"`).
func sum(m map[string]float64, name string, want ...string) float64 {
	var total float64
	for series, v := range m {
		rest, ok := strings.CutPrefix(series, name)
		if !ok || (rest != "" && rest[0] != '{') {
			continue
		}
		match := true
		for _, w := range want {
			if !strings.Contains(rest, w) {
				match = false
				break
			}
		}
		if match {
			total += v
		}
	}
	return total
}

// Series the benchmark reads from the daemon, and how it watches the spool.
const (
	metricRouted    = "konstruct_route_outcomes_total"
	metricSpool     = "konstruct_spool_records"
	metricRecorded  = "konstruct_intake_recorded_total"
	labelSinkSpool  = `sink="spool"`
	spoolPollEvery  = 100 * time.Millisecond
	spoolDrainBound = 2 * time.Minute
)

// spoolWatch polls one daemon's spool: the most records it held, and how
// many it took in all (its counter starts at 0 with each process; bank
// adds the last process's count when another takes over the address).
type spoolWatch struct {
	mu      sync.Mutex
	peak    int
	cur     int
	spooled float64 // banked, from earlier processes
	last    float64 // the current process's counter
	seen    bool    // a scrape succeeded since the last bank
}

func (w *spoolWatch) observe(m map[string]float64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cur = int(sum(m, metricSpool))
	w.peak = max(w.peak, w.cur)
	w.last = max(w.last, sum(m, metricRecorded, labelSinkSpool))
	w.seen = true
}

// bank is called when the process behind the address is gone.
func (w *spoolWatch) bank() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.spooled += w.last
	w.last, w.seen = 0, false
}

func (w *spoolWatch) snapshot() (peak, cur, spooled int, seen bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak, w.cur, int(w.spooled + w.last), w.seen
}

// run polls addr until ctx ends.
func (w *spoolWatch) run(ctx context.Context, addr string) {
	t := time.NewTicker(spoolPollEvery)
	defer t.Stop()
	for {
		if m, err := scrape(ctx, addr); err == nil {
			w.observe(m)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
