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
	"syscall"
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

// The real agent killed in the middle of a claim made through the shim
// (issue 12). The shim has the agent build a claim's secrets while runc
// creates the container, and binds the container to its init once it
// exists; until the Bind the agent holds the claim in memory only. A
// createRuntime hook holds runc's create while the test kills the agent:
//
//   - before it answers the Prepare (stopped before the create, killed
//     during it): the create fails naming the agent, and the shim takes
//     back what runc made;
//   - between the Prepare and the Bind (killed once it holds the
//     container): the shim still attaches what it was handed, but the
//     Bind cannot reach the agent, so the start fails saying so (no
//     claiming container runs unwatched) and the shim kills the container
//     before the error returns, so that nothing holds the secrets' tmpfs
//     even before a client deletes it.
//
// Either way nothing is left once the container is deleted (no shim, no
// runc init or state), the restarted agent holds and records nothing, and
// a claim after it runs.
func TestAgentKilledBeforeBind(t *testing.T) {
	bin := harness.LockboxBin(t)
	_, a := e2eSetup(t, bin)
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})
	cl, ctx := c.Client("default")
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	img, err := cl.GetImage(ctx, busybox)
	if err != nil {
		t.Fatal(err)
	}
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

	// create starts creating a claiming container whose runc create waits
	// in a createRuntime hook (60 s at most) until the returned func lets
	// it go on; it returns once the hook runs, with the task's channel.
	type created struct {
		task containerd.Task
		err  error
	}
	create := func(t *testing.T, id string) (containerd.Container, <-chan created, func()) {
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
		ctr, err := cl.NewContainer(ctx, id, containerd.WithNewSnapshot(id, img), containerd.WithRuntime(shimRuntime, nil),
			containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("cat", "/run/secrets/db_pw"), ocispec.WithService("web"), holdCreate))
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan created, 1)
		go func() {
			task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &bytes.Buffer{}, &bytes.Buffer{}), cio.WithFIFODir(c.FifoDir)))
			done <- created{task, err}
		}()
		waitCond(t, "runc's create to reach the hook", func() error {
			select {
			case cr := <-done:
				t.Fatalf("create returned before runc's create reached the hook: %v", cr.err)
			default:
			}
			_, err := os.Stat(inCreate)
			return err
		})
		return ctr, done, func() {
			if err := os.WriteFile(goOn, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	// nothingLeft checks what a deleted container may not leave.
	nothingLeft := func(t *testing.T, id string) {
		waitCond(t, "no shim left", func() error {
			if pids := c.Shims(); len(pids) != 0 {
				return fmt.Errorf("shims %v still run", pids)
			}
			return nil
		})
		checkNoTrace(ctx, t, c, "default", runcDefaultRoot, id)
	}
	// restarted restarts the killed agent (on the test, whose cleanup
	// stops it), which must hold and record nothing and serve a claim.
	restarted := func(after string) {
		a.Restart(t)
		if err := holds(ctx, a, 0); err != nil {
			t.Errorf("the restarted agent: %v", err)
		}
		if got := agentRecords(t, a); len(got) != 0 {
			t.Errorf("state dir records %v after the restart", got)
		}
		out, code, err := run(after)
		if err != nil || code != 0 || out != "hunter2-db" {
			t.Fatalf("a claim after the agent's restart: exit %d, %v: %q", code, err, out)
		}
	}

	t.Run("before it answers the Prepare", func(t *testing.T) {
		const id = "bk-prepare"
		// Stopped, the agent still has its socket: the shim connects (the
		// kernel queues the connection) and sends, and waits.
		if err := unix.Kill(a.Pid(), syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		killed := false
		defer func() {
			if !killed {
				a.Kill() // a stopped agent would hang the test's cleanup
			}
		}()
		ctr, done, goOn := create(t, id)
		a.Kill()
		killed = true
		goOn()
		cr := <-done
		if cr.err == nil {
			cr.task.Delete(ctx, containerd.WithProcessKill)
			t.Fatal("create succeeded with the agent killed before it answered")
		}
		if !strings.Contains(cr.err.Error(), `claims service "web"`) || !strings.Contains(cr.err.Error(), "agent") {
			t.Fatalf("create with the agent killed before it answered: %v, want a failure naming the service and the agent", cr.err)
		}
		t.Logf("refused as it should be: %v", cr.err)
		if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Fatal(err)
		}
		nothingLeft(t, id)
	})
	restarted("bk-after-prepare")

	t.Run("between the Prepare and the Bind", func(t *testing.T) {
		const id = "bk-bind"
		ctr, done, goOn := create(t, id)
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
		goOn()
		cr := <-done
		if cr.err != nil {
			t.Fatalf("create with the agent killed after its Prepare: %v (the window between Prepare and Bind was missed if this names the Prepare)", cr.err)
		}
		task := cr.task
		// What the shim was handed is attached: the container holds the
		// tmpfs.
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", task.Pid()), &st); err != nil {
			t.Fatalf("the created container's secret: %v", err)
		}
		err = task.Start(ctx)
		if err == nil || !strings.Contains(err.Error(), "cannot watch the container") {
			t.Fatalf("start with the agent killed before the Bind: %v, want a failure saying the agent cannot watch the container", err)
		}
		t.Logf("refused as it should be: %v", err)
		// The shim killed the container before its error: its secrets
		// went with its mount namespace, before any client deletes it.
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
		nothingLeft(t, id)
	})
	restarted("bk-after-bind")
}
