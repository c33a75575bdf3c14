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

// exitWipeDeadline is how soon after a claiming container's process is
// killed its secrets must be gone, with no delete (issue 12).
const exitWipeDeadline = time.Second

// exitRounds is how many containers each adapter kills, for the latency
// numbers in the log.
const exitRounds = 5

// Wipe on stop, not on delete: a claiming container is killed with `ctr
// task kill -s KILL` and not deleted (what `nerdctl stop` leaves): within a
// second the agent holds nothing for it and no process holds its tmpfs,
// neither mounted nor by an fd; the delete that comes later still succeeds.
// Through the runtime shim and through lockbox-runtime (both of its modes),
// on containerd 2.4.2 with a real manager and agent.
func TestWipeOnExit(t *testing.T) {
	bin := harness.LockboxBin(t)
	if _, err := os.Stat(filepath.Join(bin, "containerd-shim-lockbox-v2")); err != nil {
		t.Fatalf("%v (make build)", err)
	}
	_, a := e2eSetup(t, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: env})
	c.Import("default", harness.ImageConfig{Name: busybox})
	hooked := harness.StartContainerd(t, harness.Options{Env: append(env,
		"LOCKBOX_RUNTIME_MODE=hook", "LOCKBOX_HOOK_LOG="+filepath.Join(t.TempDir(), "hook.log"))})
	hooked.Import("default", harness.ImageConfig{Name: busybox})
	wrapper := filepath.Join(bin, "lockbox-runtime")

	adapters := []struct {
		name string
		c    *harness.Containerd
		args []string // ctr run's flags before the image
	}{
		{"shim", c, []string{"--runtime", shimRuntime}},
		{"wrapper", c, []string{"--runc-binary", wrapper, "--runc-root", c.RuncRoot}},
		{"wrapper hook", hooked, []string{"--runc-binary", wrapper, "--runc-root", hooked.RuncRoot}},
	}
	for _, ad := range adapters {
		t.Run(ad.name, func(t *testing.T) {
			var took []time.Duration
			n := 0
			for range exitRounds {
				var id string
				a.WaitUntil(t, "a claiming container to start", func() error {
					// Grants reach the agent after the service is made:
					// until then the create is refused (a fresh ID each
					// try, whatever a refused one leaves).
					n++
					id = fmt.Sprintf("lbx-exit-%d", n)
					run := append(append([]string{"run", "-d", "--fifo-dir", ad.c.FifoDir, "--annotation", "lockbox.service=web"}, ad.args...), busybox, id, "sleep", "600")
					_, err := ad.c.Ctr(ctx, "default", run...)
					return err
				})
				took = append(took, killAndWatch(ctx, t, a, ad.c, id))
			}
			slices.Sort(took)
			t.Logf("%s: kill to wipe over %d containers: p50 %v, max %v (from the start of `ctr task kill`)", ad.name, len(took), took[len(took)/2], took[len(took)-1])
		})
	}
	if held, err := a.ListReleased(ctx); err != nil || len(held) != 0 {
		t.Errorf("agent holds %v (%v) after every container was removed", held, err)
	}
}

// killAndWatch kills the running claiming container id with ctr and does
// not delete it; it returns how long after the kill began the agent held
// nothing for it and no process held its tmpfs, failing past
// exitWipeDeadline. Then it deletes the task and the container.
func killAndWatch(ctx context.Context, t *testing.T, a *harness.Agent, c *harness.Containerd, id string) time.Duration {
	t.Helper()
	pid := taskPid(ctx, t, c, id)
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/root/run/secrets", pid), &st); err != nil {
		t.Fatal(err)
	}
	dev := st.Dev
	if held, err := a.List(ctx); err != nil || !slices.Contains(held, id) {
		t.Fatalf("agent holds %v (%v), want %s among them", held, err, id)
	}
	if holders := devHolders(dev); len(holders) == 0 {
		t.Fatalf("no process holds the secrets tmpfs (dev %d:%d) while the container runs", unix.Major(dev), unix.Minor(dev))
	}

	start := time.Now()
	if out, err := c.Ctr(ctx, "default", "tasks", "kill", "-s", "SIGKILL", id); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Logf("%s: `ctr task kill` returned after %v", id, time.Since(start))
	// The agent first (cheap to ask), then every process's mounts and fds.
	var released time.Duration
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		held, err := a.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var holders []string
		if !slices.Contains(held, id) {
			holders = devHolders(dev)
			if len(holders) == 0 {
				released = time.Since(start)
				break
			}
		}
		if time.Since(start) > exitWipeDeadline {
			t.Fatalf("%v after the kill, with no delete: the agent holds %v, the tmpfs (dev %d:%d) is held by %v", time.Since(start), held, unix.Major(dev), unix.Minor(dev), holders)
		}
		<-tick.C
	}

	// The task stopped and was never deleted: the secrets went with the
	// process. The delete that comes later still succeeds (and finds
	// nothing to release).
	waitCond(t, "the task to stop", func() error {
		out, err := c.Ctr(ctx, "default", "tasks", "ls")
		if err != nil {
			return err
		}
		if !taskStopped(out, id) {
			return fmt.Errorf("task %s not stopped:\n%s", id, out)
		}
		return nil
	})
	for _, args := range [][]string{{"tasks", "delete", id}, {"containers", "delete", id}} {
		if out, err := c.Ctr(ctx, "default", args...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	if held, err := a.List(ctx); err != nil || slices.Contains(held, id) {
		t.Errorf("agent holds %v (%v) after the delete", held, err)
	}
	return released
}

// taskStopped reports whether `ctr tasks ls` output lists id as STOPPED.
func taskStopped(out, id string) bool {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == id {
			return f[2] == "STOPPED"
		}
	}
	return false
}
