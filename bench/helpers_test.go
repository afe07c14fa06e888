package bench

import (
	"slices"
	"testing"
)

func TestSumMatchesOneMetricAndItsLabels(t *testing.T) {
	t.Parallel()
	m := map[string]float64{
		`konstruct_intake_recorded_total{sink="redis"}`:  10,
		`konstruct_intake_recorded_total{sink="spool"}`:  3,
		`konstruct_intake_recorded_totals{sink="spool"}`: 100, // another metric
		`konstruct_spool_records`:                        7,
	}
	for _, c := range []struct {
		name string
		want []string
		sum  float64
	}{
		{"konstruct_intake_recorded_total", nil, 13},
		{"konstruct_intake_recorded_total", []string{`sink="spool"`}, 3},
		{"konstruct_spool_records", nil, 7},
		{"konstruct_missing", nil, 0},
	} {
		if got := sum(m, c.name, c.want...); got != c.sum {
			t.Errorf("sum(%s, %v) = %v, want %v", c.name, c.want, got, c.sum)
		}
	}
}

func TestWithEnvReplacesOrAppends(t *testing.T) {
	t.Parallel()
	env := []string{"A=1", "KONSTRUCT_REDIS_URL=redis://x", "B=2"}
	got := withEnv(env, "KONSTRUCT_REDIS_URL=redis://y", "C=3")
	want := []string{"A=1", "KONSTRUCT_REDIS_URL=redis://y", "B=2", "C=3"}
	if !slices.Equal(got, want) {
		t.Errorf("withEnv = %v, want %v", got, want)
	}
	if env[1] != "KONSTRUCT_REDIS_URL=redis://x" {
		t.Error("withEnv changed its argument")
	}
}

func TestSpoolWatchBanksEachProcessCount(t *testing.T) {
	t.Parallel()
	var w spoolWatch
	w.observe(map[string]float64{`konstruct_spool_records`: 5, `konstruct_intake_recorded_total{sink="spool"}`: 5})
	w.observe(map[string]float64{`konstruct_spool_records`: 9, `konstruct_intake_recorded_total{sink="spool"}`: 12})
	w.bank() // killed; the next process counts from 0
	w.observe(map[string]float64{`konstruct_spool_records`: 12, `konstruct_intake_recorded_total{sink="spool"}`: 4})
	w.observe(map[string]float64{`konstruct_spool_records`: 0, `konstruct_intake_recorded_total{sink="spool"}`: 4})
	peak, cur, spooled, _ := w.snapshot()
	if peak != 12 || cur != 0 || spooled != 16 {
		t.Errorf("peak %d, current %d, spooled %d; want 12, 0, 16", peak, cur, spooled)
	}
}
