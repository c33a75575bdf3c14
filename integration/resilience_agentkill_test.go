//go:build integration && linux

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/integration/harness"
)

// agentKillContainers and agentKillOrphans: how many claiming containers
// run when the agent is killed, and how many of them exit while it is dead.
const (
	agentKillContainers = 50
	agentKillOrphans    = 10
)

// kill -9 of the agent with 50 claiming containers running, started through
// the shim (issue 16). While the agent is dead, 10 of them exit (their
// release cannot reach it). The agent restarts on the same state dir: the
// 40 still running are held and their secrets read as before, through
// /proc/<pid>/root; the 10 orphans are wiped (nothing holds their tmpfs).
// Then all are stopped: the agent holds nothing, the host's mount table is
// back to its size before the containers and the agent's fd count to what
// the first agent had with nothing mounted.
func TestAgentKilled(t *testing.T) {
	bin := harness.LockboxBin(t)
	_, a := e2eSetup(t, bin)
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	runArgs := func(id string) []string {
		return []string{"run", "-d", "--runtime", shimRuntime, "--fifo-dir", c.FifoDir,
			"--annotation", "lockbox.service=web", busybox, id, "sleep", "600"}
	}
	// A first container waits for the grants and warms containerd and the
	// agent up (lazily opened fds); the baselines are taken once it is gone.
	a.WaitUntil(t, "the web service's grants", func() error {
		out, err := c.Ctr(ctx, "default", runArgs("warm")...)
		if err != nil {
			c.Ctr(ctx, "default", "containers", "delete", "warm")
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	stopAndRemove(ctx, t, c, "warm")
	waitCond(t, "the agent to let go of the warm-up container", func() error { return holds(ctx, a, 0) })
	mounts, fds := countMounts(t), agentFDs(t, a)

	type ctrInfo struct {
		id  string
		pid int
		dev uint64
	}
	var ctrs []ctrInfo
	start := time.Now()
	for i := range agentKillContainers {
		id := fmt.Sprintf("lbx-ak%02d", i)
		if out, err := c.Ctr(ctx, "default", runArgs(id)...); err != nil {
			t.Fatalf("start %s: %v: %s", id, err, out)
		}
		pid := taskPid(ctx, t, c, id)
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", pid), &st); err != nil {
			t.Fatal(err)
		}
		ctrs = append(ctrs, ctrInfo{id, pid, st.Dev})
	}
	t.Logf("%d claiming containers started through the shim in %v", len(ctrs), time.Since(start).Round(time.Millisecond))
	if err := holds(ctx, a, len(ctrs)); err != nil {
		t.Fatal(err)
	}

	a.Kill()
	killedAt := time.Now()
	orphans, live := ctrs[:agentKillOrphans], ctrs[agentKillOrphans:]
	for _, o := range orphans {
		if out, err := c.Ctr(ctx, "default", "tasks", "kill", "-s", "SIGKILL", o.id); err != nil {
			t.Fatalf("kill %s: %v: %s", o.id, err, out)
		}
	}
	for _, o := range orphans {
		waitCond(t, o.id+" to exit", func() error {
			if unix.Kill(o.pid, 0) == nil {
				return fmt.Errorf("init %d still runs", o.pid)
			}
			return nil
		})
	}

	// The agent's records of the orphans are what the restart must act on.
	if got := agentRecords(t, a); len(got) != len(ctrs) {
		t.Fatalf("state dir records %d containers with the agent dead, want %d: %v", len(got), len(ctrs), got)
	}

	restartAt := time.Now()
	a.Restart(t)
	restarted := time.Now()
	t.Logf("agent dead %v (%d containers exited meanwhile); the restarted agent answered %v after its start",
		restartAt.Sub(killedAt).Round(time.Millisecond), len(orphans), restarted.Sub(restartAt).Round(time.Millisecond))
	var want []string
	for _, l := range live {
		want = append(want, l.id)
	}
	waitCond(t, "the restarted agent to wipe the orphans and hold the rest", func() error {
		held, err := a.List(ctx)
		if err != nil {
			return err
		}
		slices.Sort(held)
		if !slices.Equal(held, want) {
			return fmt.Errorf("agent holds %d: %v, want the %d still running", len(held), held, len(want))
		}
		return nil
	})
	if got := agentRecords(t, a); !slices.Equal(got, want) {
		t.Errorf("state dir records %d containers after the restart, want the %d still running: %v", len(got), len(want), got)
	}
	t.Logf("orphans wiped and survivors held %v after the restart", time.Since(restarted).Round(time.Millisecond))
	for _, o := range orphans {
		waitCond(t, "nothing to hold the tmpfs of orphan "+o.id, func() error {
			if h := devHolders(o.dev); len(h) != 0 {
				return fmt.Errorf("held by %v", h)
			}
			return nil
		})
	}
	for _, l := range live {
		root := fmt.Sprintf("/proc/%d/root", l.pid)
		for file, data := range map[string]string{"/run/secrets/db_pw": "hunter2-db", "/run/secrets/app/key": "api-key-bytes", "/etc/app/tls.pem": "PEM-BYTES"} {
			b, err := os.ReadFile(root + file)
			if err != nil || string(b) != data {
				t.Fatalf("%s %s after the agent's restart: %v: %q", l.id, file, err, b)
			}
		}
	}

	for _, ci := range ctrs {
		stopAndRemove(ctx, t, c, ci.id)
	}
	waitCond(t, "the agent to let go of every container", func() error { return holds(ctx, a, 0) })
	if got := agentRecords(t, a); len(got) != 0 {
		t.Errorf("state dir still records %v", got)
	}
	for _, ci := range ctrs {
		if h := devHolders(ci.dev); len(h) != 0 {
			t.Errorf("tmpfs of %s still held by %v", ci.id, h)
		}
	}
	if got := countMounts(t); got > mounts {
		t.Errorf("host mount table has %d entries, %d before the containers", got, mounts)
	}
	waitCond(t, "the agent's fds back to the baseline", func() error {
		if got := agentFDs(t, a); got > fds {
			return fmt.Errorf("agent has %d fds, the first agent had %d with nothing mounted", got, fds)
		}
		return nil
	})
	t.Logf("all %d stopped: agent holds nothing, host mounts %d (baseline %d), agent fds %d (baseline %d)",
		len(ctrs), countMounts(t), mounts, agentFDs(t, a), fds)
}

// stopAndRemove kills container id's task, waits for it to stop, and
// deletes the task and the container.
func stopAndRemove(ctx context.Context, t *testing.T, c *harness.Containerd, id string) {
	t.Helper()
	c.Ctr(ctx, "default", "tasks", "kill", "-s", "SIGKILL", id)
	waitCond(t, id+" to stop", func() error {
		out, err := c.Ctr(ctx, "default", "tasks", "delete", id)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if out, err := c.Ctr(ctx, "default", "containers", "delete", id); err != nil {
		t.Fatalf("remove %s: %v: %s", id, err, out)
	}
}

// holds checks that the agent holds exactly n containers.
func holds(ctx context.Context, a *harness.Agent, n int) error {
	held, err := a.List(ctx)
	if err != nil {
		return err
	}
	if len(held) != n {
		return fmt.Errorf("agent holds %d: %v, want %d", len(held), held, n)
	}
	return nil
}

// agentRecords lists, sorted, the containers the agent's state dir keeps a
// record of (agent/records.go: containers/<id>.json).
func agentRecords(t *testing.T, a *harness.Agent) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(a.StateDir, "containers"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// agentFDs counts the agent process's open fds.
func agentFDs(t *testing.T, a *harness.Agent) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", a.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
