//go:build integration && linux

package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/plugin/ocispec"
)

// The real agent killed between a claim's two messages (issue 12). The
// shim has the agent build a claim's secrets while runc creates the
// container, and binds the container to its init once it exists; until
// the Bind the agent holds the claim in memory only. A createRuntime hook
// holds runc's create until the agent holds the container, the agent is
// killed there, and the create goes on. The shim still attaches what it
// was handed, but the Bind cannot reach the agent: the start must fail
// saying so (no claiming container runs unwatched), and the shim kills
// the container before the error returns, so that nothing holds the
// secrets' tmpfs even before a client deletes it. Once deleted, nothing
// is left: no shim, no runc init or state. The restarted agent holds and
// records nothing, and a claim after it runs.
func TestAgentKilledBeforeBind(t *testing.T) {
	bin := harness.LockboxBin(t)
	_, a := e2eSetup(t, bin)
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})
	cl, ctx := c.Client("default")
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	run := func(id string) (string, uint32, error) {
		return c.GoRunRuntime(ctx, cl, busybox, id, shimRuntime, nil, oci.WithProcessArgs("cat", "/run/secrets/db_pw"), ocispec.WithService("web"))
	}
	a.WaitUntil(t, "the web service's grants", func() error {
		out, code, err := run("bk-warm")
		if err != nil || code != 0 || out != "hunter2-db" {
			return fmt.Errorf("exit %d, %v: %q", code, err, out)
		}
		return nil
	})
	waitCond(t, "the agent to let go of the warm-up container", func() error { return holds(ctx, a, 0) })

	// The hook runs inside runc's create, after the shim has sent the
	// before-create Prepare; it waits for the test (60 s at most).
	gate := t.TempDir()
	inCreate, goOn := filepath.Join(gate, "in-create"), filepath.Join(gate, "go")
	hook := fmt.Sprintf(`touch %s; i=0; while [ ! -e %s ] && [ $i -lt 6000 ]; do sleep 0.01; i=$((i+1)); done`, inCreate, goOn)
	holdCreate := func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		if s.Hooks == nil {
			s.Hooks = &specs.Hooks{}
		}
		s.Hooks.CreateRuntime = append(s.Hooks.CreateRuntime, specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", hook}})
		return nil
	}

	const id = "bk-killed"
	img, err := cl.GetImage(ctx, busybox)
	if err != nil {
		t.Fatal(err)
	}
	ctr, err := cl.NewContainer(ctx, id, containerd.WithNewSnapshot(id, img), containerd.WithRuntime(shimRuntime, nil),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("cat", "/run/secrets/db_pw"), ocispec.WithService("web"), holdCreate))
	if err != nil {
		t.Fatal(err)
	}
	type created struct {
		task containerd.Task
		err  error
	}
	done := make(chan created, 1)
	go func() {
		task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &bytes.Buffer{}, &bytes.Buffer{}), cio.WithFIFODir(c.FifoDir)))
		done <- created{task, err}
	}()
	waitCond(t, "runc's create to reach the hook", func() error {
		_, err := os.Stat(inCreate)
		return err
	})
	waitCond(t, "the agent to hold the container being created", func() error {
		held, err := a.List(ctx)
		if err != nil {
			return err
		}
		if !slices.Contains(held, id) {
			return fmt.Errorf("agent holds %v", held)
		}
		return nil
	})
	// The agent answers right after it holds the container: give the
	// answer time to be written before the agent dies.
	time.Sleep(200 * time.Millisecond)
	if got := agentRecords(t, a); slices.Contains(got, id) {
		t.Errorf("the agent recorded %s before its Bind: %v", id, got)
	}
	a.Kill()
	if err := os.WriteFile(goOn, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cr := <-done
	if cr.err != nil {
		t.Fatalf("create with the agent killed after its Prepare: %v (the window between Prepare and Bind was missed if this names the Prepare)", cr.err)
	}
	task := cr.task
	// What the shim was handed is attached: the container holds the
	// tmpfs, and so does nothing else once it is deleted.
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", task.Pid()), &st); err != nil {
		t.Fatalf("the created container's secret: %v", err)
	}
	err = task.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "cannot watch the container") {
		t.Fatalf("start with the agent killed before the Bind: %v, want a failure saying the agent cannot watch the container", err)
	}
	t.Logf("refused as it should be: %v", err)
	// The shim killed the container before its error: its secrets went
	// with its mount namespace, before any client deletes it.
	if h := devHolders(st.Dev); len(h) != 0 {
		t.Errorf("the secrets' tmpfs is still held after the failed start, by %v", h)
	}
	if status, err := task.Status(ctx); err != nil || status.Status != containerd.Stopped {
		t.Errorf("task after the failed start: %+v, %v; want it stopped", status, err)
	}
	if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
		t.Fatalf("delete the task whose start failed: %v", err)
	}
	if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		t.Fatal(err)
	}
	waitCond(t, "no shim left", func() error {
		if pids := c.Shims(); len(pids) != 0 {
			return fmt.Errorf("shims %v still run", pids)
		}
		return nil
	})
	checkNoTrace(ctx, t, c, "default", runcDefaultRoot, id)
	waitCond(t, "nothing to hold the secrets' tmpfs", func() error {
		if h := devHolders(st.Dev); len(h) != 0 {
			return fmt.Errorf("held by %v", h)
		}
		return nil
	})

	a.Restart(t)
	if err := holds(ctx, a, 0); err != nil {
		t.Errorf("the restarted agent: %v", err)
	}
	if got := agentRecords(t, a); len(got) != 0 {
		t.Errorf("state dir records %v after the restart", got)
	}
	out, code, err := run("bk-after")
	if err != nil || code != 0 || out != "hunter2-db" {
		t.Fatalf("a claim after the agent's restart: exit %d, %v: %q", code, err, out)
	}
}
