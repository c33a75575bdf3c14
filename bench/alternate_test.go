//go:build linux

package bench

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
)

// warmupRound is the round number alternate gives each variant's warm-up
// run.
const warmupRound = 1000000

// alternate runs every variant once to warm caches (round warmupRound),
// then b.N rounds in which each variant runs once, in an order drawn anew
// every round, so that drift in the machine's load falls on all of them
// alike, and so does the work a run leaves behind. A rotating order
// (i + k mod n), as before 2026-12-05, always put the same variant after
// each one: what a real agent's claim leaves running (its wipe, its exit
// watch, the manager's report writes) then always fell on the one variant
// after it: in the shim benchmark the first containerd's baseline, or
// another build's claim, which read 2.1 ms more of the machine's CPU per
// run than the same claim through this build's shim (one run, n = 400).
// LOCKBOX_BENCH_SEED fixes the order (printed). It returns each variant's
// times, in the order of vs.
func alternate[V any](b *testing.B, vs []V, run func(v V, i int) time.Duration) [][]time.Duration {
	for _, v := range vs {
		run(v, warmupRound)
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("LOCKBOX_BENCH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			b.Fatalf("LOCKBOX_BENCH_SEED: %v", err)
		}
	}
	fmt.Printf("%s: variants in a random order each round, LOCKBOX_BENCH_SEED=%d\n", b.Name(), seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	times := make([][]time.Duration, len(vs))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, j := range rng.Perm(len(vs)) {
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
	for i := 1; i < len(names); i++ {
		lo, hi := addedCI(times[0], times[i])
		lines = append(lines, fmt.Sprintf("%-24s added %+.2fms, 95%% interval %+.2fms to %+.2fms (bootstrap over rounds)",
			names[i], ms(meds[i]-meds[0]), ms(lo), ms(hi)))
	}
	fmt.Println(strings.Join(lines, "\n"))
	return meds
}

// bootstrapResamples is how many resamples addedCI draws.
const bootstrapResamples = 2000

// addedCI is a 95% percentile-bootstrap interval for what v adds to the
// baseline's median (median(v) - median(base), the "added" of report and
// of the goals): rounds are drawn with replacement, each taking both its
// times, so that the pairing, and with it the drift the alternation
// cancels, is kept. A goal of "at most 1 ms added at p50" is met when the
// interval lies below 1 ms, missed when it lies above, and not decided by
// the run when it straddles it. The resampling is seeded, so a run's
// interval is reproducible from its times.
func addedCI(base, v []time.Duration) (lo, hi time.Duration) {
	n := min(len(base), len(v))
	if n == 0 {
		return 0, 0
	}
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	b, w := make([]time.Duration, n), make([]time.Duration, n)
	diffs := make([]time.Duration, bootstrapResamples)
	for k := range diffs {
		for j := range n {
			r := rng.IntN(n)
			b[j], w[j] = base[r], v[r]
		}
		diffs[k] = median(w) - median(b)
	}
	return pct(diffs, 0.025), pct(diffs, 0.975)
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

// machineCPU is the CPU time every task on the machine has used so far:
// the root cgroup's cpuacct.usage (cgroup v1, nanoseconds, the scheduler's
// own accounting, not ticks). ok is false where there is none.
func machineCPU() (d time.Duration, ok bool) {
	for _, p := range []string{"/sys/fs/cgroup/cpuacct/cpuacct.usage", "/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return 0, false
		}
		return time.Duration(n), true
	}
	return 0, false
}

// cpuMeter keeps, per variant, the machine's CPU time over each of its
// runs: what a container costs the machine in CPU, which the wall clock
// of a 2-core machine hides wherever the work runs beside a wait.
type cpuMeter struct {
	ok  bool
	per [][]time.Duration
}

func newCPUMeter(variants int) *cpuMeter {
	_, ok := machineCPU()
	return &cpuMeter{ok: ok, per: make([][]time.Duration, variants)}
}

// measure runs run and adds the CPU time the machine used meanwhile to
// variant v's, unless it is a warm-up round.
func (m *cpuMeter) measure(v, round int, run func() time.Duration) time.Duration {
	if !m.ok {
		return run()
	}
	c0, _ := machineCPU()
	d := run()
	c1, _ := machineCPU()
	if round != warmupRound {
		m.per[v] = append(m.per[v], c1-c0)
	}
	return d
}

// report prints each variant's mean CPU time per run and its difference
// to the first variant's, paired by round, with the standard error of
// that difference: means, because CPU time adds up. Work a run leaves
// behind (a shim's exit, an agent's wipe) falls in the next run's window,
// which alternate's random order spreads over the variants.
func (m *cpuMeter) report(names []string) {
	if !m.ok || len(m.per[0]) == 0 {
		return
	}
	lines := []string{"CPU time of the whole machine per run (root cgroup cpuacct.usage), mean; difference to " + names[0] + " paired by round, ± its standard error:"}
	for i, name := range names {
		line := fmt.Sprintf("%-24s cpu %8.2fms", name, ms(mean(m.per[i])))
		if i > 0 {
			d := pairedDiffs(m.per[0], m.per[i])
			line += fmt.Sprintf("  added %+.3fms ± %.3f", ms(mean(d)), ms(stdErr(d)))
		}
		lines = append(lines, line)
	}
	fmt.Println(strings.Join(lines, "\n"))
}

// stdErr is the standard error of the mean of ds.
func stdErr(ds []time.Duration) time.Duration {
	if len(ds) < 2 {
		return 0
	}
	m := float64(mean(ds))
	var ss float64
	for _, d := range ds {
		ss += (float64(d) - m) * (float64(d) - m)
	}
	return time.Duration(math.Sqrt(ss / float64(len(ds)-1) / float64(len(ds))))
}

// addedCI's interval holds what a variant adds, and narrows with the
// rounds: a variant 1 ms slower than its baseline under noise of ±5 ms
// per run (uniform), with load drifting over the run on both alike.
func TestAddedCI(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	rounds := func(n int) (base, v []time.Duration) {
		for r := range n {
			drift := time.Duration(r%100) * 100 * time.Microsecond
			noise := func() time.Duration { return time.Duration(rng.IntN(10_000)-5_000) * time.Microsecond }
			base = append(base, 80*time.Millisecond+drift+noise())
			v = append(v, 81*time.Millisecond+drift+noise())
		}
		return base, v
	}
	var width []time.Duration
	for _, n := range []int{100, 2000} {
		base, v := rounds(n)
		lo, hi := addedCI(base, v)
		if lo > time.Millisecond || hi < time.Millisecond || lo >= hi {
			t.Errorf("n=%d: interval %v to %v does not hold the 1ms added", n, lo, hi)
		}
		width = append(width, hi-lo)
	}
	if width[1] >= width[0]/2 {
		t.Errorf("the interval did not narrow with 20 times the rounds: %v, then %v", width[0], width[1])
	}
	// The same times, the same interval: the resampling is seeded.
	base, v := rounds(300)
	lo1, hi1 := addedCI(base, v)
	lo2, hi2 := addedCI(base, v)
	if lo1 != lo2 || hi1 != hi2 {
		t.Errorf("two intervals from the same times: %v..%v and %v..%v", lo1, hi1, lo2, hi2)
	}
}
