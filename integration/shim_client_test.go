//go:build integration && linux

package integration

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
	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/plugin/ocispec"
)

// startShimContainerd starts a containerd 2.4.2 that finds the built shim,
// with a test agent serving shimGrants, and busybox in "default".
func startShimContainerd(t *testing.T) (*harness.Containerd, *harness.TestAgent) {
	bin := harness.LockboxBin(t)
	if _, err := os.Stat(filepath.Join(bin, "containerd-shim-lockbox-v2")); err != nil {
		t.Fatalf("%v (make build)", err)
	}
	a := harness.StartTestAgent(t, shimGrants(), testSecrets)
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})
	return c, a
}

// The shim through containerd's Go client: WithRuntime(io.containerd.lockbox.v2,
// nil) and the claim as an OCI spec option (ocispec.WithService).
func TestShimGoClient(t *testing.T) {
	c, a := startShimContainerd(t)
	cl, ctx := c.Client("default")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	run := func(id string, opts ...oci.SpecOpts) (string, uint32, error) {
		return c.GoRunRuntime(ctx, cl, busybox, id, shimRuntime, nil, opts...)
	}
	noShimLeft := func(t *testing.T) {
		t.Helper()
		// The shim exits after containerd's delete and shutdown, which a
		// failed create returns before.
		waitCond(t, "no shim left", func() error {
			if pids := c.Shims(); len(pids) != 0 {
				return fmt.Errorf("shims %v still run", pids)
			}
			return nil
		})
	}

	t.Run("claim read by a non-root user", func(t *testing.T) {
		out, code, err := run("go-users", oci.WithProcessArgs("sh", "-c", nonRootScript), oci.WithUIDGID(1000, 1000), ocispec.WithService("users"))
		if err != nil || code != 0 {
			t.Fatalf("exit %d, %v: %s", code, err, out)
		}
		checkNonRoot(t, out)
	})

	t.Run("claim as root", func(t *testing.T) {
		out, code, err := run("go-web", oci.WithProcessArgs("sh", "-c", inspectScript), ocispec.WithService("web"))
		if err != nil || code != 0 {
			t.Fatalf("exit %d, %v: %s", code, err, out)
		}
		checkInspect(t, out)
	})

	t.Run("not claiming", func(t *testing.T) {
		out, code, err := run("go-plain", oci.WithProcessArgs("sh", "-c", "ls /run/secrets 2>&1; true"))
		if err != nil || code != 0 || !strings.Contains(out, "No such file") {
			t.Fatalf("exit %d, %v: %s", code, err, out)
		}
	})

	t.Run("runc options passed through", func(t *testing.T) {
		// runc's options with the shim's runtime type: runc keeps its
		// state in the Root given, and a task deleted before it started
		// is released.
		const id = "go-opts"
		img, err := cl.GetImage(ctx, busybox)
		if err != nil {
			t.Fatal(err)
		}
		ctr, err := cl.NewContainer(ctx, id, containerd.WithNewSnapshot(id, img),
			containerd.WithRuntime(shimRuntime, &options.Options{Root: c.RuncRoot}),
			containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("true"), ocispec.WithService("web")))
		if err != nil {
			t.Fatal(err)
		}
		defer ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)
		task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &bytes.Buffer{}, &bytes.Buffer{}), cio.WithFIFODir(c.FifoDir)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(c.RuncRoot, "default", id)); err != nil {
			t.Errorf("runc state not in the Root passed as runc's option: %v", err)
		}
		if held := a.Held(); len(held) != 1 || held[0] != id {
			t.Errorf("agent holds %v for a created task, want [%s]", held, id)
		}
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
			t.Fatal(err)
		}
		if held := a.HeldReleased(); len(held) != 0 {
			t.Errorf("agent holds %v after the delete", held)
		}
		checkNoTrace(ctx, t, c, "default", c.RuncRoot, id)
	})

	t.Run("not granted", func(t *testing.T) {
		const id = "go-denied"
		_, _, err := run(id, oci.WithProcessArgs("true"), ocispec.WithService("payments"))
		if err == nil || !strings.Contains(err.Error(), `"payments"`) {
			t.Fatalf("claiming a service with no grant: %v, want a failure naming it", err)
		}
		t.Logf("refused as it should be: %v", err)
		noShimLeft(t)
		checkNoTrace(ctx, t, c, "default", runcDefaultRoot, id)
	})

	if held := a.HeldReleased(); len(held) != 0 {
		t.Errorf("agent holds %v after every container was removed", held)
	}

	t.Run("agent down", func(t *testing.T) {
		a.Stop()
		const id = "go-down"
		_, _, err := run(id, oci.WithProcessArgs("true"), ocispec.WithService("users"))
		if err == nil || !strings.Contains(err.Error(), "lockbox agent not reachable") || !strings.Contains(err.Error(), `"users"`) {
			t.Fatalf("claiming container with the agent down: %v, want a failure saying the agent is not reachable", err)
		}
		t.Logf("refused as it should be: %v", err)
		noShimLeft(t)
		checkNoTrace(ctx, t, c, "default", runcDefaultRoot, id)
		out, code, err := run("go-down-plain", oci.WithProcessArgs("echo", "still-runs"))
		if err != nil || code != 0 || !strings.Contains(out, "still-runs") {
			t.Fatalf("non-claiming container with the agent down: exit %d, %v: %s", code, err, out)
		}
	})
}

// A user-namespaced container run through the shim with ctr sees its
// files owned by the grant's ids.
func TestShimUserNamespace(t *testing.T) {
	c, a := startShimContainerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append(c.ShimRunArgs(shimRuntime),
		"--uidmap", "0:100000:65536", "--gidmap", "0:200000:65536",
		"--annotation", "lockbox.service=web", busybox, "shim-userns", "sh", "-c", inspectScript+"; cat /proc/self/uid_map")
	out, err := c.Ctr(ctx, "default", args...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "100000") {
		t.Fatalf("container is not user-namespaced: %s", out)
	}
	checkInspect(t, out)
	if held := a.HeldReleased(); len(held) != 0 {
		t.Errorf("agent holds %v after the container was removed", held)
	}
}

// Many create/start/exit/delete cycles of a claiming container through the
// shim with the Go client leave no mount, fd, Shmem, process or state
// behind. LOCKBOX_CYCLES sets the count (default 1000).
func TestShimCyclesLeaveNothing(t *testing.T) {
	n := 1000
	if s := os.Getenv("LOCKBOX_CYCLES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("LOCKBOX_CYCLES=%q: %v", s, err)
		}
		n = v
	}
	c, a := startShimContainerd(t)
	cl, ctx := c.Client("default")
	// runc's Root in the temp dir, so that what runc leaves is ours to count.
	ropts := &options.Options{Root: c.RuncRoot}
	run := func(i int) {
		out, code, err := c.GoRunRuntime(ctx, cl, busybox, fmt.Sprintf("shimcycle%d", i), shimRuntime, ropts,
			oci.WithProcessArgs("cat", "/run/secrets/db_pw"), ocispec.WithService("web"))
		if err != nil || code != 0 || out != "hunter2-db" {
			t.Fatalf("cycle %d: exit %d, %v: %q", i, code, err, out)
		}
	}
	// A warm-up cycle, so that lazily opened fds (the client's connection,
	// containerd's event streams) are in the baseline.
	run(1000000)
	waitCond(t, "the warm-up's shim to exit", func() error {
		if pids := c.Shims(); len(pids) != 0 {
			return fmt.Errorf("shims %v still run", pids)
		}
		return nil
	})
	ctdPid := c.Pid()
	agentFDs, ctdFDs := countFDs(t), procFDs(t, ctdPid)
	hostMounts, ourMounts := countMounts(t), mountsUnder(t, c.Dir)
	shmem := shmemKB(t)
	start := time.Now()
	for i := 0; i < n; i++ {
		run(i)
	}
	took := time.Since(start)
	t.Logf("%d cycles in %v (%.1f ms per cycle)", n, took.Round(time.Millisecond), float64(took)/float64(n)/1e6)

	waitCond(t, "every shim to exit", func() error {
		if pids := c.Shims(); len(pids) != 0 {
			return fmt.Errorf("shims %v still run", pids)
		}
		return nil
	})
	if pids := runcInitsContaining("/shimcycle"); len(pids) != 0 {
		t.Errorf("runc init processes left: %v", pids)
	}
	if held := a.HeldReleased(); len(held) != 0 {
		t.Errorf("agent holds %d mounts", len(held))
	}
	gotAgent, gotCtd := countFDs(t), procFDs(t, ctdPid)
	gotHost, gotOurs := countMounts(t), mountsUnder(t, c.Dir)
	gotShmem := shmemKB(t)
	t.Logf("agent (test process) fds %d -> %d; containerd fds %d -> %d; host mountinfo %d -> %d (under the test's dir %d -> %d); Shmem %d kB -> %d kB",
		agentFDs, gotAgent, ctdFDs, gotCtd, hostMounts, gotHost, ourMounts, gotOurs, shmem, gotShmem)
	if gotAgent > agentFDs {
		t.Errorf("agent (test process) has %d fds, %d before the cycles", gotAgent, agentFDs)
	}
	// containerd's own count moves by a few (gRPC streams, GC): a leak per
	// cycle would show n.
	if gotCtd > ctdFDs+10 {
		t.Errorf("containerd has %d fds, %d before the cycles", gotCtd, ctdFDs)
	}
	// The host's whole table moves with whatever else runs on the machine;
	// every mount of these containers is under the test's dir, and the
	// secrets tmpfs is never in the host's table (held, it shows in Shmem
	// and the agent's fds).
	if gotOurs != ourMounts {
		t.Errorf("host mount table has %d entries under %s, %d before the cycles", gotOurs, c.Dir, ourMounts)
	}
	if gotShmem > shmem+int64(n)*8/2+4096 {
		t.Errorf("Shmem grew from %d kB to %d kB", shmem, gotShmem)
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

func procFDs(t *testing.T, pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// mountsUnder counts the host's mounts at or below dir.
func mountsUnder(t *testing.T, dir string) int {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			n++
		}
	}
	return n
}

// runcInitsContaining lists the "runc init" processes whose cgroup path
// contains sub.
func runcInitsContaining(sub string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.HasPrefix(cmdline, []byte("runc\x00init")) {
			continue
		}
		if cg, _ := os.ReadFile("/proc/" + e.Name() + "/cgroup"); bytes.Contains(cg, []byte(sub)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// The shim with containerd's state, runc's state and the fifos each on a
// tmpfs, as /run/containerd is on a node (harness.Options.StateOnTmpfs, what
// the shim benchmarks run on): a claim is served, and after the delete no
// bundle, claim record or runc state is left on them, and the harness takes
// its mounts down with containerd.
func TestShimStateOnTmpfs(t *testing.T) {
	bin := harness.LockboxBin(t)
	a := harness.StartTestAgent(t, shimGrants(), testSecrets)
	c := harness.StartContainerd(t, harness.Options{StateOnTmpfs: true, ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})
	dirs := []string{filepath.Join(c.Dir, "state"), c.RuncRoot, c.FifoDir}
	for _, d := range dirs {
		var st syscall.Statfs_t
		if err := syscall.Statfs(d, &st); err != nil {
			t.Fatal(err)
		}
		if st.Type != unix.TMPFS_MAGIC {
			t.Fatalf("%s is not a tmpfs (file system type %#x)", d, st.Type)
		}
	}
	cl, ctx := c.Client("default")
	out, code, err := c.GoRunRuntime(ctx, cl, busybox, "tmpfs-state", shimRuntime, &options.Options{Root: c.RuncRoot},
		oci.WithProcessArgs("cat", "/run/secrets/db_pw"), ocispec.WithService("web"))
	if err != nil || code != 0 || out != "hunter2-db" {
		t.Fatalf("exit %d, %v: %q", code, err, out)
	}
	waitCond(t, "the shim to exit", func() error {
		if pids := c.Shims(); len(pids) != 0 {
			return fmt.Errorf("shims %v still run", pids)
		}
		return nil
	})
	if held := a.Held(); len(held) != 0 {
		t.Errorf("the agent still holds %v", held)
	}
	// What containerd keeps of its own there (its mount manager's
	// database) stays; the bundles, runc's state and the fifos must not.
	bundles := filepath.Join(c.Dir, "state", "io.containerd.runtime.v2.task", "default")
	if _, err := os.Stat(bundles); err != nil {
		t.Fatalf("the bundles' directory: %v", err)
	}
	var left []string
	for _, d := range []string{bundles, c.RuncRoot, c.FifoDir} {
		filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err == nil && !e.IsDir() {
				left = append(left, p)
			}
			return nil
		})
	}
	if len(left) != 0 {
		t.Errorf("left on the state tmpfs after the delete: %v", left)
	}
}
