//go:build integration && linux

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/plugin/ocispec"
)

// The containerd Go client with ocispec.WithService: the claim is an OCI
// spec option, the wrapper the shim's BinaryName.
func TestGoClient(t *testing.T) {
	bin := harness.LockboxBin(t)
	a := harness.StartTestAgent(t, testGrants, testSecrets)
	c := harness.StartContainerd(t, harness.Options{Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})
	cl, ctx := c.Client("default")
	out, code, err := c.GoRun(ctx, cl, busybox, "go1", filepath.Join(bin, "lockbox-runtime"),
		oci.WithProcessArgs("sh", "-c", inspectScript), ocispec.WithService("web"))
	if err != nil || code != 0 {
		t.Fatalf("exit %d, %v: %s", code, err, out)
	}
	checkInspect(t, out)
	out, code, err = c.GoRun(ctx, cl, busybox, "go2", filepath.Join(bin, "lockbox-runtime"),
		oci.WithProcessArgs("sh", "-c", "ls /run/secrets 2>&1; true"))
	if err != nil || code != 0 || !strings.Contains(out, "No such file") {
		t.Fatalf("non-claiming: exit %d, %v: %s", code, err, out)
	}
}

// Many create/start/exit/delete cycles of claiming containers leave no
// mount, fd, file or agent state behind. LOCKBOX_CYCLES sets the count
// (default 1000, what CI runs).
func TestCyclesLeaveNothing(t *testing.T) {
	n := 1000
	if s := os.Getenv("LOCKBOX_CYCLES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("LOCKBOX_CYCLES=%q: %v", s, err)
		}
		n = v
	}
	bin := harness.LockboxBin(t)
	a := harness.StartTestAgent(t, testGrants, testSecrets)
	c := harness.StartContainerd(t, harness.Options{Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})
	cl, ctx := c.Client("default")
	// The output is what is checked: harness.GoRun waits for the
	// container's output before the task delete, which would otherwise
	// drop what the client had not read yet (TestClientDeleteDropsUnreadOutput).
	run := func(i int) {
		out, code, err := c.GoRun(ctx, cl, busybox, fmt.Sprintf("cycle%d", i), filepath.Join(bin, "lockbox-runtime"),
			oci.WithProcessArgs("cat", "/run/secrets/db_pw"), ocispec.WithService("web"))
		if err != nil || code != 0 || out != "hunter2-db" {
			t.Fatalf("cycle %d: exit %d, %v: %q", i, code, err, out)
		}
	}
	// One warm-up cycle, so that lazily opened fds (the Go client's
	// connections, the runtime's epoll) are counted in the baseline.
	run(1000000)
	fds, mounts, shmem := countFDs(t), countMounts(t), shmemKB(t)
	start := time.Now()
	for i := 0; i < n; i++ {
		run(i)
	}
	took := time.Since(start)
	t.Logf("%d cycles in %v (%.1f ms per cycle)", n, took.Round(time.Millisecond), float64(took)/float64(n)/1e6)
	if held := a.Held(); len(held) != 0 {
		t.Errorf("agent holds %d mounts", len(held))
	}
	if got := countFDs(t); got > fds {
		t.Errorf("test process (agent side) has %d fds, %d before the cycles", got, fds)
	}
	// Only growth is a leak: a mount left by an earlier test's cleanup may
	// go away meanwhile (CI saw 21 before, 20 after).
	if got := countMounts(t); got > mounts {
		t.Errorf("host mount table has %d entries, %d before the cycles", got, mounts)
	}
	// Shmem is noisy (other processes), but n leaked tmpfs mounts of this
	// size would show: allow a margin far below n * the plan's size.
	if got := shmemKB(t); got > shmem+int64(n)*8/2+4096 {
		t.Errorf("Shmem grew from %d kB to %d kB", shmem, got)
	}
	for _, d := range []string{filepath.Join(c.RuncRoot, "default"), filepath.Join(c.Dir, "state", "io.containerd.runtime.v2.task", "default")} {
		ents, _ := os.ReadDir(d)
		if len(ents) != 0 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Errorf("%s still holds %v", d, names)
		}
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func countMounts(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

func shmemKB(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Shmem:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	t.Fatal("no Shmem in /proc/meminfo")
	return 0
}
