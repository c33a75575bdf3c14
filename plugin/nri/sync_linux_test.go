package nri

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/containerd/nri/pkg/api"
)

const testCtrID = "0f3c5b2e9d41a7c86b0e2f4d9a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1d3f5a7c"

// startSleeper runs a process the test may kill, and a fake /proc whose
// cgroup file for it says cgroup.
func startSleeper(t *testing.T, cgroup string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	proc := t.TempDir()
	dir := filepath.Join(proc, strconv.Itoa(cmd.Process.Pid))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroup), 0o644); err != nil {
		t.Fatal(err)
	}
	return cmd, proc
}

// notKilled reports whether cmd was spared: it is sent SIGTERM and must
// die of it. A SIGKILL sent before is pending or delivered already, and
// wins.
func notKilled(t *testing.T, cmd *exec.Cmd) bool {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGTERM
}

func TestEvictContainerKills(t *testing.T) {
	for _, cg := range []string{
		"0::/k8s.io/" + testCtrID + "\n",                                                  // cgroup v2, cgroupfs driver
		"12:memory:/k8s.io/" + testCtrID + "\n0::/\n",                                     // v1 hybrid
		"0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-" + testCtrID + ".scope\n", // systemd driver
	} {
		cmd, proc := startSleeper(t, cg)
		if err := evictContainer(proc, &api.Container{Id: testCtrID, Pid: uint32(cmd.Process.Pid)}); err != nil {
			t.Fatalf("cgroup %q: %v", cg, err)
		}
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("cgroup %q: process ended with %v, want SIGKILL", cg, err)
		}
		// Gone (and reaped): nothing to evict, nothing signalled.
		if err := evictContainer(proc, &api.Container{Id: testCtrID, Pid: uint32(cmd.Process.Pid)}); !errors.Is(err, errNotRunning) {
			t.Fatalf("evict of an exited container: %v, want errNotRunning", err)
		}
	}
}

// A pid the runtime listed may belong to another process by now: one
// whose cgroup does not name the container is never signalled.
func TestEvictContainerReusedPid(t *testing.T) {
	for _, cg := range []string{"0::/k8s.io/another\n", "0::/user.slice\n", "", "garbage"} {
		cmd, proc := startSleeper(t, cg)
		if err := evictContainer(proc, &api.Container{Id: testCtrID, Pid: uint32(cmd.Process.Pid)}); !errors.Is(err, errNotRunning) {
			t.Errorf("cgroup %q: %v, want errNotRunning", cg, err)
		}
		if !notKilled(t, cmd) {
			t.Errorf("cgroup %q: a process outside the container was killed", cg)
		}
	}
	// The real /proc: this test's child sits in no container's cgroup.
	cmd, _ := startSleeper(t, "")
	for _, c := range []*api.Container{{Id: testCtrID, Pid: uint32(cmd.Process.Pid)}, {Id: testCtrID}, {Pid: uint32(cmd.Process.Pid)}} {
		if err := evictContainer("/proc", c); !errors.Is(err, errNotRunning) {
			t.Errorf("real /proc, container %v: %v, want errNotRunning", c, err)
		}
	}
	if !notKilled(t, cmd) {
		t.Error("real /proc: a process outside the container was killed")
	}
}
