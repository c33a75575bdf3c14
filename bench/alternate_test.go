//go:build linux

package bench

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
)

// alternate runs every variant once to warm caches, then b.N rounds in
// which each variant runs once, in an order that rotates every round, so
// that drift in the machine's load falls on all of them alike. It returns
// each variant's times, in the order of vs.
func alternate[V any](b *testing.B, vs []V, run func(v V, i int) time.Duration) [][]time.Duration {
	for _, v := range vs {
		run(v, 1000000)
	}
	times := make([][]time.Duration, len(vs))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range vs {
			j := (i + k) % len(vs)
			times[j] = append(times[j], run(vs[j], i))
		}
	}
	b.StopTimer()
	return times
}

// report prints each variant's median, p90, ratio to the first variant
// (the baseline) and the time it adds, with the machine's core count and
// load, and returns the medians. Printed, not logged: the testing package
// cuts a benchmark's log to its first lines.
func report(b *testing.B, names []string, times [][]time.Duration) []time.Duration {
	meds := make([]time.Duration, len(times))
	for i, t := range times {
		meds[i] = median(t)
	}
	lines := []string{fmt.Sprintf("%s: n=%d per variant, %s", b.Name(), b.N, benchinfo.Machine())}
	for i, name := range names {
		lines = append(lines, fmt.Sprintf("%-24s median %8.2fms  p90 %8.2fms  ratio %.4f  added %+.2fms",
			name, ms(meds[i]), ms(pct(times[i], 0.9)), float64(meds[i])/float64(meds[0]), ms(meds[i]-meds[0])))
	}
	for i := 1; i < len(names); i++ {
		d := pairedDiffs(times[0], times[i])
		lines = append(lines, fmt.Sprintf("%-24s paired: median of per-round differences to %s %+.2fms (p25 %+.2fms, p75 %+.2fms)",
			names[i], names[0], ms(median(d)), ms(pct(d, 0.25)), ms(pct(d, 0.75))))
	}
	fmt.Println(strings.Join(lines, "\n"))
	return meds
}

// pairedDiffs returns v's time minus the baseline's in each round: the two
// ran one after the other, so load that drifts over the run (other users
// of a shared machine) falls on both and cancels, where the difference of
// the medians carries it.
func pairedDiffs(base, v []time.Duration) []time.Duration {
	n := min(len(base), len(v))
	d := make([]time.Duration, n)
	for r := range n {
		d[r] = v[r] - base[r]
	}
	return d
}
