//go:build linux

package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/lockbox-project/lockbox/internal/procstat"
)

// The runtime types the shim benchmark compares.
const (
	runcShim    = "io.containerd.runc.v2"
	lockboxShim = "io.containerd.lockbox.v2"
)

// BenchmarkShimLifecycle measures create → start → exit → delete with the
// Go client for containerd's own runc shim (the baseline), for
// containerd-shim-lockbox-v2 with a container that claims nothing, and for
// the same shim claiming a service of 10 × 4 KiB secrets from the in-process
// test agent (LOCKBOX_BENCH_REAL_AGENT adds a real agent's: shimVariants).
// One containerd serves these variants; variants alternate in
// a random order in each iteration, so drift in the machine's load falls on
// all of them alike. Run with -benchtime=Nx (N iterations of every variant);
// LOCKBOX_BIN must hold containerd-shim-lockbox-v2 (make build).
func BenchmarkShimLifecycle(b *testing.B) {
	variants, a := shimVariants(b)
	index := map[*shimVariant]int{}
	for i, v := range variants {
		index[v] = i
	}
	cpu := newCPUMeter(len(variants))
	spans := newSpanLog(len(variants))
	agents := readAgentCPU(b, variants)
	times := alternate(b, variants, func(v *shimVariant, i int) time.Duration {
		return cpu.measure(index[v], i, func() time.Duration {
			return spans.measure(index[v], i, func() time.Duration { return v.run(b, i, nil) })
		})
	})
	spans.write(b, variantNames(variants))
	meds := report(b, variantNames(variants), times)
	cpu.report(variantNames(variants))
	agents.report(b, b.N+1) // the warm-up claimed too
	b.ReportMetric(float64(meds[1])/float64(meds[0]), "plain/runc-shim")
	b.ReportMetric(float64(meds[2])/float64(meds[0]), "claim/runc-shim")
	b.ReportMetric(ms(meds[2]-meds[0]), "claim-added-ms")
	_, hi := addedCI(times[0], times[2])
	b.ReportMetric(ms(hi), "claim-added-ms-ci95-hi")
	b.ReportMetric(ms(median(pairedDiffs(times[0], times[2]))), "claim-added-ms-paired")
	b.ReportMetric(ms(median(pairedDiffs(times[0], times[1]))), "plain-added-ms-paired")
	// What a claim costs, against a plain container of the same shim:
	// the runc shim collects garbage at containerd's GOGC 40, Lockbox's at
	// Go's default (plugin/shim collectAtGoDefault), which makes every
	// container of Lockbox's shim cheaper and hides part of a claim's
	// cost in the comparison with the runc shim that the goal names.
	reportPair(b, "the claim, against the Lockbox shim's plain container", "", "claim-over-plain-ms", times[1], times[2])
	if hasRealAgent(variants) {
		reportRealAgent(b, times[realRunc], times[realRunc+1])
		reportPair(b, "real agent, against the Lockbox shim's plain container on its containerd", "", "real-claim-over-plain-ms", times[realRunc+2], times[realRunc+1])
	}
	if held := a.Held(); len(held) != 0 {
		b.Errorf("agent still holds %d mounts after all containers were deleted", len(held))
	}
}

// agentCPU is the CPU time of each real agent a variant claims from, read
// before the run: what it used after, per claim, is what a claim costs the
// agent, whatever it does for it beside the answer (the exit watch, the
// wipe, the reports) and the Go runtime's share included. The agent idles
// at next to nothing between claims (a tick, 10 ms, in 40 s here), and it
// is a process of its own, which the machine's CPU meter cannot tell apart.
type agentCPU struct {
	names []string
	pids  []int
	start []procstat.Stat
	wakes []map[int]int
}

func readAgentCPU(b *testing.B, variants []*shimVariant) *agentCPU {
	a := &agentCPU{}
	for _, v := range variants {
		if v.agentPid == 0 {
			continue
		}
		st, err := procstat.Read(v.agentPid)
		if err != nil {
			b.Fatalf("%s: the real agent's CPU time: %v", v.name, err)
		}
		a.names, a.pids, a.start = append(a.names, v.name), append(a.pids, v.agentPid), append(a.start, st)
		a.wakes = append(a.wakes, threadWakes(v.agentPid))
	}
	return a
}

// threadWakes reads the voluntary context switches of each of pid's
// threads: each is a wake-up from a sleep, the Go runtime's included.
func threadWakes(pid int) map[int]int {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, _ := os.ReadDir(dir)
	out := map[int]int{}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "status"))
		if err != nil {
			continue // ended meanwhile
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					out[tid] = n
				}
			}
		}
	}
	return out
}

// wakesPerClaim is what the threads of pid woke between before and after,
// in all and its sysmon thread's (internal/sysmon: the lowest thread ID
// above the process's), per claim. Threads that ended meanwhile are not
// counted.
func wakesPerClaim(pid int, before, after map[int]int, claims int) (all, sysmon float64) {
	first, total := 0, 0
	for tid, n := range after {
		total += n - before[tid]
		if tid > pid && (first == 0 || tid < first) {
			first = tid
		}
	}
	return float64(total) / float64(claims), float64(after[first]-before[first]) / float64(claims)
}

// report prints each agent's CPU time per claim, claims being how many
// containers its variant ran; the real agent's is reported as
// real-agent-cpu-ms.
func (a *agentCPU) report(b *testing.B, claims int) {
	if len(a.pids) == 0 {
		return
	}
	perClaim := func(ticks uint64) float64 { return float64(ticks) * 1000 / procstat.TicksPerSecond / float64(claims) }
	lines := []string{fmt.Sprintf("CPU time of the real agent per claim (its /proc/<pid>/stat utime and stime, %d claims each, in clock ticks of %d ms):", claims, 1000/procstat.TicksPerSecond)}
	for i, pid := range a.pids {
		st, err := procstat.Read(pid)
		if err != nil {
			b.Fatalf("%s: the real agent's CPU time: %v", a.names[i], err)
		}
		u, s := st.UTime-a.start[i].UTime, st.STime-a.start[i].STime
		all, sm := wakesPerClaim(pid, a.wakes[i], threadWakes(pid), claims)
		lines = append(lines, fmt.Sprintf("%-24s agent cpu %6.3fms  (user %.3fms, system %.3fms); thread wake-ups %.1f, of them sysmon's %.1f", a.names[i], perClaim(u+s), perClaim(u), perClaim(s), all, sm))
		if a.names[i] == "real-agent-shim-claim" {
			b.ReportMetric(perClaim(u+s), "real-agent-cpu-ms")
			b.ReportMetric(all, "real-agent-wakes")
		}
	}
	fmt.Println(strings.Join(lines, "\n"))
}

// lifecycle runs one container to its exit through rt (a runtime type or
// a shim's absolute path) with runc's options ropts and deletes it,
// returning its exit code and output. mark, if
// not nil, is called as each client call returns (the phase benchmark's
// timestamps).
func lifecycle(ctx context.Context, cl *containerd.Client, fifoDir string, img containerd.Image, id, rt string, ropts *options.Options, opts []oci.SpecOpts, mark func(step string)) (uint32, string, error) {
	if mark == nil {
		mark = func(string) {}
	}
	ctr, err := cl.NewContainer(ctx, id,
		containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime(rt, ropts),
		containerd.WithNewSpec(opts...),
	)
	if err != nil {
		return 0, "", fmt.Errorf("new container: %w", err)
	}
	mark("container-created")
	defer func() {
		ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)
		mark("container-deleted")
	}()
	// Separate buffers: the two streams are copied by separate goroutines.
	var stdout, stderr bytes.Buffer
	task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr), cio.WithFIFODir(fifoDir)))
	if err != nil {
		return 0, "", fmt.Errorf("new task: %w", err)
	}
	mark("task-created")
	defer task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	exitc, err := task.Wait(ctx)
	if err != nil {
		return 0, "", err
	}
	if err := task.Start(ctx); err != nil {
		return 0, "", fmt.Errorf("start: %w", err)
	}
	mark("started")
	var st containerd.ExitStatus
	select {
	case st = <-exitc:
	case <-ctx.Done():
		task.Kill(context.WithoutCancel(ctx), syscall.SIGKILL)
		return 0, "", ctx.Err()
	}
	mark("exited")
	code, _, err := st.Result()
	if err != nil {
		return 0, "", err
	}
	task.IO().Wait()
	mark("io-done")
	if _, err := task.Delete(ctx); err != nil {
		return code, "", fmt.Errorf("delete task: %w", err)
	}
	mark("task-deleted")
	return code, stdout.String() + stderr.String(), nil
}

// reportRealAgent prints and reports the real agent's claim against the runc
// shim on the same containerd (realRunc): ratio of the medians, added p50,
// and the paired median with its quartiles.
func reportRealAgent(b *testing.B, base, claim []time.Duration) {
	reportPair(b, "real agent, against the runc shim on its containerd", "real-claim/real-runc", "real-claim-added-ms", base, claim)
}

// reportPair prints what claim adds to base (ratio of the medians, added
// p50 with its 95% interval, paired median and quartiles) and reports it
// under ratio (may be empty) and added (with -ci95-hi and -paired).
func reportPair(b *testing.B, what, ratio, added string, base, claim []time.Duration) {
	mb, mc := median(base), median(claim)
	d := pairedDiffs(base, claim)
	lo, hi := addedCI(base, claim)
	fmt.Printf("%s: %s: ratio %.4f, added %+.2fms (95%% interval %+.2fms to %+.2fms); paired median %+.2fms (p25 %+.2fms, p75 %+.2fms)\n",
		b.Name(), what, float64(mc)/float64(mb), ms(mc-mb), ms(lo), ms(hi), ms(median(d)), ms(pct(d, 0.25)), ms(pct(d, 0.75)))
	if ratio != "" {
		b.ReportMetric(float64(mc)/float64(mb), ratio)
	}
	b.ReportMetric(ms(mc-mb), added)
	b.ReportMetric(ms(hi), added+"-ci95-hi")
	b.ReportMetric(ms(median(d)), added+"-paired")
}
