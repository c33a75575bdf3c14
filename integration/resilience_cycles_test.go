//go:build integration && linux

package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/internal/testutil/procmem"
	"github.com/lockbox-project/lockbox/plugin/ocispec"
)

// realAgentCyclesDefault is TestCyclesRealAgent's count when LOCKBOX_CYCLES
// is not set: small enough for `make integration` (about 10 s of cycles);
// `make test-resilience` runs 10,000.
const realAgentCyclesDefault = 100

// realAgentWarmup is how many cycles run before the baseline: the agent's
// Go heap, gRPC and local-API buffers and containerd's lazily opened fds
// reach their steady size in the first few.
const realAgentWarmup = 20

// agentAnonGrowthKiB bounds the growth of the agent's private memory
// (smaps_rollup Anonymous) over the cycles. The agent's Go heap may sit at
// up to twice its live size before a collection (GOGC=100), and freed spans
// stay resident until the runtime's background scavenger hands them back,
// so a few MiB of movement is the heap breathing, not a leak. 8 MiB is
// well above that and well below what a per-cycle leak shows at 10,000
// cycles: anything over ~840 bytes a cycle fails it.
const agentAnonGrowthKiB = 8 << 10

// The REAL `lockbox agent` (joined to a real `lockbox manager`) through the
// shim: LOCKBOX_CYCLES create/start/exit/delete cycles of a claiming
// container through containerd's Go client (issue 16: "10,000 container
// start/stop cycles: mounts, fds, Shmem, agent and shim memory back to
// baseline"). Each container reads its secret; after the cycles nothing is
// left: no shim or runc init process, no mount under the test's dirs, no
// runc, containerd or agent state, the agent holds nothing, its fds and
// containerd's are back to their baseline, Shmem and the agent's private
// memory within stated bounds, and a shim serving one container is the
// size it was before the cycles.
func TestCyclesRealAgent(t *testing.T) {
	n := realAgentCyclesDefault
	if s := os.Getenv("LOCKBOX_CYCLES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("LOCKBOX_CYCLES=%q: want a positive count (%v)", s, err)
		}
		n = v
	}
	bin := harness.LockboxBin(t)
	if _, err := os.Stat(filepath.Join(bin, "containerd-shim-lockbox-v2")); err != nil {
		t.Fatalf("%v (make build)", err)
	}
	// The agent's Prometheus metrics carry its Go runtime's figures (live
	// heap, goroutines): what the resident memory alone cannot tell apart.
	metricsAddr := harness.FreeAddrOn(t, "127.0.0.1")
	_, a := webSetup(t, bin, nil, "--metrics-addr", metricsAddr)
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})
	cl, ctx := c.Client("default")
	ctx, cancel := context.WithTimeout(ctx, time.Duration(n)*time.Second+5*time.Minute)
	defer cancel()
	// runc's Root in the temp dir, so that what runc leaves is ours to count.
	ropts := &options.Options{Root: c.RuncRoot}
	cycle := func(i int) error {
		out, code, err := c.GoRunRuntime(ctx, cl, busybox, fmt.Sprintf("agcycle%d", i), shimRuntime, ropts,
			oci.WithProcessArgs("cat", "/run/secrets/db_pw"), ocispec.WithService("web"))
		if err != nil || code != 0 || out != "hunter2-db" {
			return fmt.Errorf("cycle %d: exit %d, %v: %q", i, code, err, out)
		}
		return nil
	}
	// The grants reach the agent asynchronously: the first cycle waits.
	a.WaitUntil(t, "the web service's grants", func() error { return cycle(-1) })
	for i := range realAgentWarmup {
		if err := cycle(-2 - i); err != nil {
			t.Fatal(err)
		}
	}
	noShims := func() error {
		if pids := c.Shims(); len(pids) != 0 {
			return fmt.Errorf("shims %v still run", pids)
		}
		return nil
	}
	waitCond(t, "the warm-up's shims to exit", noShims)
	shim0 := shimRSS(ctx, t, c, "agshim-before")
	waitCond(t, "the shim measured to exit", noShims)
	if err := holds(ctx, a, 0); err != nil {
		t.Fatal(err)
	}
	ctdPid := c.Pid()
	base := cycleCounts{
		hostMounts: countMounts(t), ctdMounts: mountsUnder(t, c.Dir), agentMounts: mountsUnder(t, filepath.Dir(a.StateDir)),
		agentFDs: agentFDs(t, a), ctdFDs: procFDs(t, ctdPid), shmem: shmemKB(t), agent: readSmaps(t, a.Pid()),
		rt: scrapeRuntime(t, metricsAddr),
	}
	start := time.Now()
	step := max(n/10, 1)
	for i := range n {
		if err := cycle(i); err != nil {
			t.Fatal(err)
		}
		if (i+1)%step == 0 && i+1 < n {
			m, rt := readSmaps(t, a.Pid()), scrapeRuntime(t, metricsAddr)
			t.Logf("  %6d cycles, %v: agent Anonymous %d kB (%+d), fds %d, %s", i+1,
				time.Since(start).Round(time.Second), m.anon, m.anon-base.agent.anon, agentFDs(t, a), rt)
		}
	}
	took := time.Since(start)
	t.Logf("%d cycles through the shim with the real agent in %v (%.1f ms per cycle)",
		n, took.Round(time.Millisecond), float64(took)/float64(n)/1e6)

	waitCond(t, "every shim to exit", noShims)
	if pids := runcInitsContaining("/agcycle"); len(pids) != 0 {
		t.Errorf("runc init processes left: %v", pids)
	}
	if err := holds(ctx, a, 0); err != nil {
		t.Error(err)
	}
	if recs := agentRecords(t, a); len(recs) != 0 {
		t.Errorf("the agent's state dir still records %d containers: %v", len(recs), recs)
	}
	for _, d := range []string{filepath.Join(c.RuncRoot, "default"), filepath.Join(c.Dir, "state", "io.containerd.runtime.v2.task", "default")} {
		if ents, _ := os.ReadDir(d); len(ents) != 0 {
			t.Errorf("%s still holds %d entries", d, len(ents))
		}
	}
	// The agent's fds: a release answers before every fd of it is closed
	// (the exit watch's drain): wait, bounded, for the baseline.
	var gotFDs int
	waitCond(t, "the agent's fds back to the baseline", func() error {
		if gotFDs = agentFDs(t, a); gotFDs > base.agentFDs {
			return fmt.Errorf("agent has %d fds, %d before the cycles", gotFDs, base.agentFDs)
		}
		return nil
	})
	got := cycleCounts{
		hostMounts: countMounts(t), ctdMounts: mountsUnder(t, c.Dir), agentMounts: mountsUnder(t, filepath.Dir(a.StateDir)),
		agentFDs: gotFDs, ctdFDs: procFDs(t, ctdPid), shmem: shmemKB(t), agent: readSmaps(t, a.Pid()),
		rt: scrapeRuntime(t, metricsAddr),
	}
	shim1 := shimRSS(ctx, t, c, "agshim-after")
	t.Logf("agent fds %d -> %d; containerd fds %d -> %d; host mountinfo %d -> %d (under containerd's dir %d -> %d, the agent's %d -> %d); Shmem %d kB -> %d kB",
		base.agentFDs, got.agentFDs, base.ctdFDs, got.ctdFDs, base.hostMounts, got.hostMounts,
		base.ctdMounts, got.ctdMounts, base.agentMounts, got.agentMounts, base.shmem, got.shmem)
	t.Logf("agent smaps_rollup kB: Rss %d -> %d, Anonymous %d -> %d (%+d, %.0f bytes per cycle), Locked %d -> %d; a shim serving one container: VmRSS %d kB -> %d kB",
		base.agent.rss, got.agent.rss, base.agent.anon, got.agent.anon, got.agent.anon-base.agent.anon,
		float64(got.agent.anon-base.agent.anon)*1024/float64(n), base.agent.locked, got.agent.locked, shim0, shim1)

	t.Logf("agent Go runtime: %s -> %s", base.rt, got.rt)
	// LOCKBOX_CYCLES_SETTLE (a duration, for the figures; unset in CI):
	// leave the agent idle that long and read its memory again. The Go
	// runtime forces a collection every two minutes, after which its
	// scavenger hands back heap freed and kept since: growth that then
	// goes was the heap breathing; growth that stays is held.
	if s := os.Getenv("LOCKBOX_CYCLES_SETTLE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("LOCKBOX_CYCLES_SETTLE=%q: %v", s, err)
		}
		time.Sleep(d)
		m, rt := readSmaps(t, a.Pid()), scrapeRuntime(t, metricsAddr)
		t.Logf("after %v idle: agent Anonymous %d kB (%+d against the baseline), Rss %d kB; Go runtime: %s", d, m.anon, m.anon-base.agent.anon, m.rss, rt)
	}
	// A goroutine per container left behind would show n; a few come and
	// go with the session (a heartbeat in flight).
	if got.rt.goroutines > base.rt.goroutines+10 {
		t.Errorf("the agent runs %d goroutines, %d before the cycles", got.rt.goroutines, base.rt.goroutines)
	}
	// containerd's own count moves by a few (gRPC streams, GC): a leak per
	// cycle would show n.
	if got.ctdFDs > base.ctdFDs+10 {
		t.Errorf("containerd has %d fds, %d before the cycles", got.ctdFDs, base.ctdFDs)
	}
	// The host's whole table moves with whatever else runs on the machine;
	// every mount of these containers is under containerd's dir, and the
	// secrets tmpfs is never in the host's table (held, it shows in Shmem
	// and the agent's fds).
	if got.ctdMounts != base.ctdMounts || got.agentMounts != base.agentMounts {
		t.Errorf("mounts under containerd's dir %d -> %d, under the agent's %d -> %d",
			base.ctdMounts, got.ctdMounts, base.agentMounts, got.agentMounts)
	}
	// Shmem is the host's: other processes move it. n leaked tmpfs of a
	// few files each would pass this margin only at a fraction of n.
	if got.shmem > base.shmem+int64(n)*8/2+4096 {
		t.Errorf("Shmem grew from %d kB to %d kB", base.shmem, got.shmem)
	}
	if d := got.agent.anon - base.agent.anon; d > agentAnonGrowthKiB {
		t.Errorf("the agent's private memory (Anonymous) grew by %d kB over %d cycles (bound %d kB)", d, n, agentAnonGrowthKiB)
	}
	// Locked is the grants' secret pages (internal/secretmem): the cycles
	// add no grant, so it must not move.
	if got.agent.locked != base.agent.locked {
		t.Errorf("the agent's locked memory moved from %d kB to %d kB with the same grants", base.agent.locked, got.agent.locked)
	}
	// A shim is a new process per container: one serving a single
	// container after the cycles must be the size of one before them (a
	// quarter of slack for the pages faulted in by timing).
	if shim1 > shim0*5/4 {
		t.Errorf("a shim serving one container: VmRSS %d kB before the cycles, %d kB after", shim0, shim1)
	}
}

// cycleCounts is what TestCyclesRealAgent compares before and after.
type cycleCounts struct {
	hostMounts, ctdMounts, agentMounts int
	agentFDs, ctdFDs                   int
	shmem                              int64
	agent                              smaps
	rt                                 goRuntime
}

// goRuntime is what the agent's Prometheus Go collector says of its
// runtime: goroutines, the live heap (bytes in allocated objects) and the
// heap's spans in use.
type goRuntime struct {
	goroutines           int
	heapAlloc, heapInuse float64
	// heapKept is heap the runtime has freed and not yet returned to
	// the kernel (heap idle less heap released): resident, and part of
	// Anonymous, until the scavenger gives it back. stacks and meta are
	// goroutine stacks and the runtime's own structures (spans, GC
	// metadata, other).
	heapKept, stacks, meta float64
}

func (g goRuntime) String() string {
	return fmt.Sprintf("goroutines %d, heap alloc %.0f kB, heap in use %.0f kB, freed heap kept %.0f kB, stacks %.0f kB, runtime metadata %.0f kB",
		g.goroutines, g.heapAlloc/1024, g.heapInuse/1024, g.heapKept/1024, g.stacks/1024, g.meta/1024)
}

// scrapeRuntime reads goRuntime from the agent's /metrics on addr.
func scrapeRuntime(t *testing.T, addr string) goRuntime {
	t.Helper()
	// No keep-alive: a connection the client kept open would be one more
	// fd of the agent's, counted against its baseline.
	cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := cl.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var g goRuntime
	var idle, released float64
	seen := 0
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "go_goroutines":
			g.goroutines, seen = int(v), seen+1
		case "go_memstats_heap_alloc_bytes":
			g.heapAlloc, seen = v, seen+1
		case "go_memstats_heap_inuse_bytes":
			g.heapInuse, seen = v, seen+1
		case "go_memstats_heap_idle_bytes":
			idle = v
		case "go_memstats_heap_released_bytes":
			released = v
		case "go_memstats_stack_inuse_bytes":
			g.stacks = v
		case "go_memstats_mspan_inuse_bytes", "go_memstats_gc_sys_bytes", "go_memstats_other_sys_bytes":
			g.meta += v
		}
	}
	g.heapKept = idle - released
	if seen != 3 {
		t.Fatalf("the agent's metrics lack go_goroutines or go_memstats_heap_{alloc,inuse}_bytes")
	}
	return g
}

// smaps is one reading of /proc/<pid>/smaps_rollup, in kB: Anonymous is
// what the process holds privately (Go heap and stacks, the grants' locked
// pages), Locked the part mlock keeps in RAM (agent/daemon's memory
// benchmark reads the same fields).
type smaps struct{ rss, anon, locked int }

func readSmaps(t *testing.T, pid int) smaps {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var m smaps
	fields := map[string]*int{"Rss": &m.rss, "Anonymous": &m.anon, "Locked": &m.locked}
	seen := 0
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, _ := strings.Cut(line, ":")
		if p, ok := fields[name]; ok {
			v, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			if err != nil {
				t.Fatalf("smaps_rollup %q: %v", line, err)
			}
			*p = v
			seen++
		}
	}
	if seen != len(fields) {
		t.Fatalf("/proc/%d/smaps_rollup lacks Rss, Anonymous or Locked:\n%s", pid, b)
	}
	return m
}

// shimRSS starts claiming container id (sleeping) through the shim, reads
// the VmRSS of the one shim serving it, then stops and removes it.
func shimRSS(ctx context.Context, t *testing.T, c *harness.Containerd, id string) int {
	t.Helper()
	if out, err := c.Ctr(ctx, "default", "run", "-d", "--runtime", shimRuntime, "--fifo-dir", c.FifoDir,
		"--annotation", "lockbox.service=web", busybox, id, "sleep", "600"); err != nil {
		t.Fatalf("start %s: %v: %s", id, err, out)
	}
	defer stopAndRemove(ctx, t, c, id)
	pids := c.Shims()
	if len(pids) != 1 {
		t.Fatalf("%d shims serve containerd with one container running: %v", len(pids), pids)
	}
	return int(procmem.KiB(t, pids[0], "VmRSS"))
}
