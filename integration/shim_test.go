//go:build integration && linux

package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/integration/harness"
)

// shimRuntime is the runtime type of containerd-shim-lockbox-v2.
const shimRuntime = "io.containerd.lockbox.v2"

// runcDefaultRoot is where the runc shim keeps runc state when it gets no
// runc options (ctr passes none to a runtime type other than runc's).
const runcDefaultRoot = "/run/containerd/runc"

// The runtime shim on containerd 2.4.2 with a real manager and agent,
// through ctr: claiming (by runtime type and by the shim's absolute path),
// non-claiming, not granted (fails closed, nothing left behind), and a
// delete that leaves the agent holding nothing and the tmpfs gone.
func TestShimCtr(t *testing.T) {
	bin := harness.LockboxBin(t)
	shimBin := filepath.Join(bin, "containerd-shim-lockbox-v2")
	if _, err := os.Stat(shimBin); err != nil {
		t.Fatalf("%v (make build)", err)
	}
	_, a := e2eSetup(t, bin)
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := func(runtime, id, service string, cmd ...string) (string, error) {
		args := c.ShimRunArgs(runtime)
		if service != "" {
			args = append(args, "--annotation", "lockbox.service="+service)
		}
		args = append(append(args, busybox, id), cmd...)
		return c.Ctr(ctx, "default", args...)
	}

	t.Run("claim", func(t *testing.T) {
		var out string
		n := 0
		a.WaitUntil(t, "the web service's grants", func() error {
			n++
			var err error
			out, err = run(shimRuntime, fmt.Sprintf("claim%d", n), "web", "sh", "-c", inspectScript)
			return err
		})
		checkInspect(t, out)
	})

	t.Run("claim by absolute path", func(t *testing.T) {
		out, err := run(shimBin, "abspath", "web", "sh", "-c", inspectScript)
		if err != nil {
			t.Fatal(err)
		}
		checkInspect(t, out)
	})

	t.Run("not claiming", func(t *testing.T) {
		out, err := run(shimRuntime, "plain", "", "sh", "-c", "ls /run/secrets 2>&1; true")
		if err != nil || !strings.Contains(out, "No such file") {
			t.Fatalf("non-claiming container: %v: %s", err, out)
		}
	})

	t.Run("not granted", func(t *testing.T) {
		const id = "lbx-shim-denied"
		_, err := run(shimRuntime, id, "payments", "true")
		var ce *harness.CtrError
		if !errors.As(err, &ce) || !strings.Contains(ce.Stderr, `"payments"`) {
			t.Fatalf("claiming a service with no grant: %v, want a failure naming it", err)
		}
		t.Logf("refused as it should be: %s", strings.TrimSpace(ce.Stderr))
		// The shim exits after containerd's delete and shutdown, which the
		// failed create returns before.
		waitCond(t, "no shim left", func() error {
			if pids := c.Shims(); len(pids) != 0 {
				return fmt.Errorf("shims %v still run", pids)
			}
			return nil
		})
		if pids := runcInits("/default/" + id); len(pids) != 0 {
			t.Errorf("runc init of %s still runs: %v", id, pids)
		}
		if _, err := os.Stat(filepath.Join(runcDefaultRoot, "default", id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("runc state of %s remains (%v)", id, err)
		}
		if out, err := c.Ctr(ctx, "default", "tasks", "ls", "-q"); err != nil || strings.Contains(out, id) {
			t.Errorf("containerd still lists task %s (%v): %s", id, err, out)
		}
	})

	t.Run("delete releases", func(t *testing.T) {
		const id = "lbx-shim-held"
		args := []string{"run", "-d", "--runtime", shimRuntime, "--fifo-dir", c.FifoDir,
			"--annotation", "lockbox.service=web", busybox, id, "sleep", "600"}
		if out, err := c.Ctr(ctx, "default", args...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		pid := taskPid(ctx, t, c, id)
		// Where the "not granted" case looks for leftover runc state.
		state := filepath.Join(runcDefaultRoot, "default", id)
		if _, err := os.Stat(state); err != nil {
			t.Fatalf("runc state of the running container: %v", err)
		}
		root := fmt.Sprintf("/proc/%d/root", pid)
		if b, err := os.ReadFile(root + "/run/secrets/db_pw"); err != nil || string(b) != "hunter2-db" {
			t.Fatalf("secret in the running container: %q, %v", b, err)
		}
		// The secret's own file: each target is a single-file mount of the
		// tmpfs (/run/secrets is a directory of the container's root).
		var st unix.Stat_t
		if err := unix.Stat(root+"/run/secrets/db_pw", &st); err != nil {
			t.Fatal(err)
		}
		dev := st.Dev
		if held, err := a.List(ctx); err != nil || len(held) != 1 || held[0] != id {
			t.Fatalf("agent holds %v (%v), want [%s]", held, err, id)
		}
		if holders := devHolders(dev); len(holders) == 0 {
			t.Fatalf("no process holds the secrets tmpfs (dev %d:%d) while the container runs", unix.Major(dev), unix.Minor(dev))
		}

		if out, err := c.Ctr(ctx, "default", "tasks", "kill", "-s", "SIGKILL", id); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		waitCond(t, "the task to stop", func() error {
			out, err := c.Ctr(ctx, "default", "tasks", "ls")
			if err != nil {
				return err
			}
			for _, l := range strings.Split(out, "\n") {
				if f := strings.Fields(l); len(f) == 3 && f[0] == id && f[2] != "STOPPED" {
					return fmt.Errorf("task %s is %s", id, f[2])
				}
			}
			return nil
		})
		for _, args := range [][]string{{"tasks", "delete", id}, {"containers", "delete", id}} {
			if out, err := c.Ctr(ctx, "default", args...); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		if held, err := a.ListReleased(ctx); err != nil || len(held) != 0 {
			t.Errorf("agent holds %v (%v) after the delete", held, err)
		}
		if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("runc state of %s remains after the delete (%v)", id, err)
		}
		// Once the agent has served the delete's release (written, not
		// waited for: plugin/shim), no process may hold the tmpfs,
		// neither mounted nor by an fd.
		if holders := devHolders(dev); len(holders) != 0 {
			t.Errorf("the secrets tmpfs (dev %d:%d) is still held after the delete: %v", unix.Major(dev), unix.Minor(dev), holders)
		}
	})

	if held, err := a.ListReleased(ctx); err != nil || len(held) != 0 {
		t.Errorf("agent holds %v (%v) after every container was removed", held, err)
	}
}

// waitCond polls cond until it holds, for up to 30 s.
func waitCond(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		<-tick.C
	}
}

// taskPid is the init pid ctr lists for task id.
func taskPid(ctx context.Context, t *testing.T, c *harness.Containerd, id string) int {
	t.Helper()
	out, err := c.Ctr(ctx, "default", "tasks", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("tasks ls: %q", l)
			}
			return pid
		}
	}
	t.Fatalf("task %s not listed:\n%s", id, out)
	return 0
}

// runcInits lists the "runc init" processes in a cgroup whose path ends
// with cgroupSuffix (containerd's default cgroup path is /<ns>/<id>).
func runcInits(cgroupSuffix string) []int {
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
		cg, _ := os.ReadFile("/proc/" + e.Name() + "/cgroup")
		for _, l := range strings.Split(string(cg), "\n") {
			if strings.HasSuffix(l, cgroupSuffix) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// devHolders lists where a filesystem of device dev is still held on the
// host: a mount of it in any process's mount table, or an open fd on it.
func devHolders(dev uint64) []string {
	want := fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
	var holders []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		p := "/proc/" + e.Name()
		if mi, err := os.ReadFile(p + "/mountinfo"); err == nil {
			for _, l := range strings.Split(string(mi), "\n") {
				if f := strings.Fields(l); len(f) > 4 && f[2] == want {
					holders = append(holders, p+" mounts "+f[4])
					break
				}
			}
		}
		fds, _ := os.ReadDir(p + "/fd")
		for _, fd := range fds {
			var st unix.Stat_t
			if unix.Stat(p+"/fd/"+fd.Name(), &st) == nil && st.Dev == dev {
				holders = append(holders, p+"/fd/"+fd.Name())
			}
		}
	}
	return holders
}
