//go:build linux

package bench

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/plugin/shim"
)

// shimSteps is the order of a lifecycle's steps: the client's (each as its
// call returned) and the Lockbox shim's (shim.TraceEnv; the runc shim has
// none). A segment is the time from the step before that the container
// has to this one; steps a variant lacks are skipped, so the runc shim's
// "task-created" segment spans what the Lockbox shim splits.
var shimSteps = []struct{ name, what string }{
	{"container-created", "client: container record and snapshot"},
	{"create", "shim started (containerd spawns it, bootstrap, TTRPC) until its Create runs"},
	{"claim-read", "shim: claim read from config.json"},
	{"dialled", "shim: agent connection"},
	{"targets", "shim: Targets round trip (read-only root or user namespace only)"},
	{"runc-create", "shim: before the inner create"},
	// Beside runc's create: the record, and the agent's before-create
	// Prepare (build and hand over). A build before the Bind has these
	// after runc-created, its Prepare attaching by pid.
	{"recorded", "shim: claim record written to the bundle (beside runc's create)"},
	{"agent-prepare", "agent (real agent only): Prepare request decoded and handed to the agent"},
	{"agent-identified", "agent: container lock, caller identified (before the create: nothing to identify)"},
	{"agent-planned", "agent: claim rules admitted, plan made"},
	{"agent-built", "agent: tmpfs built, files written"},
	{"agent-attached", "agent: handed over (open_tree clones; a build before the Bind: attached by pidfd and setns), the record written beside it"},
	{"agent-recorded", "agent: the container record's write, if the handover finished first"},
	{"agent-watched", "agent: exit watch registered (before the create: none yet)"},
	{"agent-logged", "agent: 'secrets mounted' logged"},
	{"agent-reported", "agent: mount reported to the session"},
	{"agent-answer", "agent: Prepare returned to the local API server (container unlocked)"},
	{"agent-sent", "agent: answer marshalled and sent (sendmsg)"},
	{"answer-read", "shim: answer read (its thread woken from recvmsg)"},
	{"prepared", "shim: agent Prepare round trip done"},
	{"runc-created", "shim: runc create (the runc task service's Create), waited with the Prepare beside it"},
	{"attached", "shim: handed-over mounts attached in the container (pidfd, setns, move_mount)"},
	{"bind-sent", "shim: Bind written to the agent (its answer read by Start)"},
	{"create-done", "shim: Create returns"},
	{"task-created", "client: NewTask returned"},
	{"agent-bound", "agent (real agent only): Bind: the container's process recorded"},
	{"agent-bound-watched", "agent: its exit watched"},
	{"bound", "shim: Start read the Bind's answer"},
	{"started", "client: Start returned"},
	{"exited", "client: exit event received"},
	{"io-done", "client: stdio copied"},
	{"delete", "shim: Delete runs"},
	{"runc-deleted", "shim: runc delete (the runc task service's Delete)"},
	{"release-ready", "shim: the release's record read and agent dial (beside runc's delete) waited for"},
	{"release-sent", "shim: Release written to the agent (not answered)"},
	{"agent-release", "agent (real agent only): Release request decoded"},
	{"agent-released", "agent: released (answered; its wipe may follow)"},
	{"delete-done", "shim: claim record removed, Delete returns"},
	{"stop", "shim manager's Stop (a separate process) runs"},
	{"stop-done", "shim manager's Stop, with its release from disk"},
	{"task-deleted", "client: task Delete returned"},
	{"container-deleted", "client: container and snapshot removed"},
}

// shimSpans are the stretches of a claiming container's lifecycle that
// the claim adds to: from runc's create to the shim's Create returning
// (the attach; in a build before the Bind, the record and the Prepare
// round trip), from runc's delete to the shim's Delete returning (the
// release), and from NewTask returning to the exit event (Start, which
// waits for the Bind, and the exit).
var shimSpans = []struct{ name, from, to string }{
	{"create-claim", "runc-created", "create-done"},
	{"delete-release", "runc-deleted", "delete-done"},
	// The client's Start call and the exit event together: a claiming
	// container's Start returns sooner than a plain one's, which makes
	// the exit step alone look later than it is.
	{"start-to-exit", "task-created", "exited"},
	// The client's calls, which every variant has, and the shim's Create
	// with runc's create inside it: where work the claim moved (the
	// Prepare beside runc's create, what containerd finishes after a
	// Create answers) lands.
	{"new-task", "container-created", "task-created"},
	{"shim-create", "runc-create", "create-done"},
	{"start", "task-created", "started"},
	{"exit", "started", "exited"},
	{"task-delete", "io-done", "task-deleted"},
}

// BenchmarkShimPhases splits BenchmarkShimLifecycle's containers by step:
// the same three variants (runc shim, Lockbox shim plain and claiming 10 ×
// 4 KiB), alternating in a random order, each step timestamped on
// CLOCK_MONOTONIC by the client as its call returns and by the Lockbox
// shim (shim.TraceEnv, set for this benchmark only). Prints, per step, the
// median time from the previous step each variant has, and the claim's
// difference to the runc shim and to the plain Lockbox shim.
func BenchmarkShimPhases(b *testing.B) {
	trace := filepath.Join(b.TempDir(), "shim-trace")
	// In the environment too: the real agent (LOCKBOX_BENCH_REAL_AGENT)
	// inherits it and traces its side of a Prepare and a Release.
	b.Setenv(shim.TraceEnv, trace)
	variants, _ := shimVariants(b, shim.TraceEnv+"="+trace)
	// marks[id][step] = CLOCK_MONOTONIC ns ("begin": the lifecycle's).
	var mu sync.Mutex
	marks := map[string]map[string]int64{}
	variantOf := map[string]int{}
	index := map[*shimVariant]int{}
	for k, v := range variants {
		index[v] = k
	}
	run := func(v *shimVariant, i int) time.Duration {
		id := fmt.Sprintf("%s-%d", v.name, i)
		m := map[string]int64{"begin": monotonic()}
		d := v.run(b, i, func(step string) {
			t := monotonic()
			mu.Lock()
			m[step] = t
			mu.Unlock()
		})
		if i != warmupRound {
			mu.Lock()
			marks[id] = m
			variantOf[id] = index[v]
			mu.Unlock()
		}
		return d
	}
	times := alternate(b, variants, run)
	meds := report(b, variantNames(variants), times)
	if err := readShimTrace(trace, marks); err != nil {
		b.Fatal(err)
	}
	segs := make([]map[string][]time.Duration, len(variants))
	for i := range segs {
		segs[i] = map[string][]time.Duration{}
	}
	for id, m := range marks {
		k := variantOf[id]
		prev := m["begin"]
		for _, s := range shimSteps {
			t, ok := m[s.name]
			if !ok {
				continue
			}
			segs[k][s.name] = append(segs[k][s.name], time.Duration(t-prev))
			prev = t
		}
	}
	var sb strings.Builder
	// Medians by default; LOCKBOX_BENCH_PHASES_MEAN=1 prints means, which
	// add up to the mean lifecycle (medians do not), so that a cost spread
	// thinly over every step, or one that comes in a few long waits, shows.
	agg, aggName := median, "median"
	if os.Getenv("LOCKBOX_BENCH_PHASES_MEAN") != "" {
		agg, aggName = mean, "mean"
	}
	fmt.Fprintf(&sb, "%s: %s ms from the previous step the variant has (n=%d per variant)\n", b.Name(), aggName, b.N)
	short := map[string]string{"runc-shim": "runc", "lockbox-shim-plain": "plain", "lockbox-shim-claim": "claim",
		"real-agent-runc-shim": "real-runc", "real-agent-shim-claim": "real-claim", "real-agent-shim-plain": "real-plain",
		"compare-shim-claim": "cmp-claim", "compare-real-shim-claim": "cmp-real"}
	cols := make([]string, len(variants))
	for k, v := range variants {
		cols[k] = short[v.name]
	}
	fmt.Fprintf(&sb, "%-18s", "step")
	for _, c := range cols {
		fmt.Fprintf(&sb, " %10s", c)
	}
	fmt.Fprintf(&sb, " %11s %11s", "claim-runc", "claim-plain")
	if hasRealAgent(variants) {
		fmt.Fprintf(&sb, " %11s", "real-r-runc")
	}
	sb.WriteString("  what\n")
	cell := func(k int, step string) (float64, bool) {
		d := segs[k][step]
		if len(d) == 0 {
			return 0, false
		}
		return ms(agg(d)), true
	}
	diff := func(a, b int, step string) string {
		x, okx := cell(a, step)
		y, oky := cell(b, step)
		if !okx || !oky {
			return ""
		}
		return fmt.Sprintf("%+.3f", x-y)
	}
	for _, st := range shimSteps {
		fmt.Fprintf(&sb, "%-18s", st.name)
		for k := range variants {
			if v, ok := cell(k, st.name); ok {
				fmt.Fprintf(&sb, " %10.3f", v)
			} else {
				fmt.Fprintf(&sb, " %10s", "-")
			}
		}
		fmt.Fprintf(&sb, " %11s %11s", diff(2, 0, st.name), diff(2, 1, st.name))
		if hasRealAgent(variants) {
			fmt.Fprintf(&sb, " %11s", diff(realRunc+1, realRunc, st.name))
		}
		fmt.Fprintf(&sb, "  %s\n", st.what)
	}
	// The claim's own spans, per container (a median of sums, which the
	// sum of the steps' medians above is not).
	fmt.Fprintf(&sb, "spans (median per container, ms):")
	for _, sp := range shimSpans {
		fmt.Fprintf(&sb, "  %s:", sp.name)
		for k := range variants {
			var d []time.Duration
			for id, m := range marks {
				if variantOf[id] != k {
					continue
				}
				a, okA := m[sp.from]
				z, okZ := m[sp.to]
				if okA && okZ {
					d = append(d, time.Duration(z-a))
				}
			}
			if len(d) > 0 {
				fmt.Fprintf(&sb, " %s %.3f", cols[k], ms(median(d)))
			}
		}
	}
	sb.WriteString("\n")
	fmt.Print(sb.String())
	b.ReportMetric(float64(meds[2])/float64(meds[0]), "claim/runc-shim")
	b.ReportMetric(ms(meds[2]-meds[0]), "claim-added-ms")
	if hasRealAgent(variants) {
		reportRealAgent(b, times[realRunc], times[realRunc+1])
	}
}

// monotonic is CLOCK_MONOTONIC in ns, the clock of the shim's trace.
func monotonic() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}

// readShimTrace adds the shim's trace lines ("<id> <step> <ns>") to the
// marks of the containers the benchmark timed.
func readShimTrace(path string, marks map[string]map[string]int64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("shim trace: %w (is the shim built from this tree?)", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 3 {
			continue
		}
		m := marks[fs[0]]
		if m == nil {
			continue
		}
		t, err := strconv.ParseInt(fs[2], 10, 64)
		if err != nil {
			return fmt.Errorf("shim trace: %q: %w", sc.Text(), err)
		}
		m[fs[1]] = t
	}
	return sc.Err()
}

func mean(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(len(d))
}
