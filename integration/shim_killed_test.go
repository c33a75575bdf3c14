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
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/integration/harness"
)

// TestShimKilled: the shim of a running claiming container is killed with
// SIGKILL. containerd finds it dead and runs the shim binary's cleanup (the
// runc shim manager's Stop, which releases from the claim recorded in the
// bundle) and the container's init goes with it (the agent's exit watch):
// either way, nothing is left: the agent holds nothing, no process holds
// the secrets tmpfs, no runc init or runc state remains, and the container
// can be removed.
func TestShimKilled(t *testing.T) {
	bin := harness.LockboxBin(t)
	_, a := e2eSetup(t, bin)
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const id = "lbx-shim-killed"
	args := []string{"run", "-d", "--runtime", shimRuntime, "--fifo-dir", c.FifoDir,
		"--annotation", "lockbox.service=web", busybox, id, "sleep", "600"}
	a.WaitUntil(t, "the web service's grants", func() error {
		out, err := c.Ctr(ctx, "default", args...)
		if err != nil {
			c.Ctr(ctx, "default", "containers", "delete", id)
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	pid := taskPid(ctx, t, c, id)
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", pid), &st); err != nil {
		t.Fatal(err)
	}
	dev := st.Dev
	if held, err := a.List(ctx); err != nil || len(held) != 1 || held[0] != id {
		t.Fatalf("agent holds %v (%v), want [%s]", held, err, id)
	}
	shims := shimPids(id)
	if len(shims) != 1 {
		t.Fatalf("shim processes of %s: %v, want one", id, shims)
	}
	if err := unix.Kill(shims[0], unix.SIGKILL); err != nil {
		t.Fatal(err)
	}

	waitCond(t, "the agent to let go of the container", func() error {
		held, err := a.List(ctx)
		if err != nil {
			return err
		}
		if len(held) != 0 {
			return fmt.Errorf("agent holds %v", held)
		}
		return nil
	})
	waitInitEnded(t, id, pid)
	waitCond(t, "nothing to hold the secrets tmpfs", func() error {
		if h := devHolders(dev); len(h) != 0 {
			return fmt.Errorf("held by %v", h)
		}
		return nil
	})
	waitCond(t, "containerd to drop the task", func() error {
		out, err := c.Ctr(ctx, "default", "tasks", "ls", "-q")
		if err != nil {
			return err
		}
		if strings.Contains(out, id) {
			return fmt.Errorf("task listed: %s", out)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(runcDefaultRoot, "default", id)); err == nil {
		t.Errorf("runc state of %s remains after the shim died", id)
	}
	if out, err := c.Ctr(ctx, "default", "containers", "delete", id); err != nil {
		t.Errorf("remove the container: %v: %s", err, out)
	}
	if left := shimPids(id); len(left) != 0 {
		t.Errorf("shims of %s still run: %v", id, left)
	}
}

// shimPids lists the containerd-shim-lockbox-v2 processes started for
// container id.
func shimPids(id string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
		if len(args) == 0 || filepath.Base(string(args[0])) != "containerd-shim-lockbox-v2" {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if string(args[i]) == "-id" && string(args[i+1]) == id {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// waitInitEnded waits until container id's runc init and its init process
// pid are gone: after its shim died, nothing of the container may run on.
func waitInitEnded(t *testing.T, id string, pid int) {
	t.Helper()
	waitCond(t, "the container's processes to end", func() error {
		if inits := runcInits("/" + id); len(inits) != 0 {
			return fmt.Errorf("runc init %v", inits)
		}
		if unix.Kill(pid, 0) == nil {
			return fmt.Errorf("init %d still runs", pid)
		}
		return nil
	})
}
