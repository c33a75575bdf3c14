//go:build linux

package linux

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/mounter"
)

// TestWipeWhatTheContainerWrote: a container whose user namespace owns its
// mount namespace holds CAP_SYS_ADMIN over its mounts, and the kernel
// locks mount flags only on copies into a less privileged namespace, not
// on a mount moved in: such a container can remount its secrets writable
// (measured here). Each is a single file, so it can only change that
// file's bytes, but the wipe must still leave nothing behind: not bytes it
// appended past a secret's size.
func TestWipeWhatTheContainerWrote(t *testing.T) {
	src := memSource{"id-a": secretData("a", 10), "id-b": secretData("b", 20)}
	_, m := build(t, []mounter.Grant{
		{SecretID: "id-a", SecretName: "a", Target: "d/a"},
		{SecretID: "id-b", SecretName: "b", Target: "/etc/b"},
	}, src)
	rootfs := t.TempDir()
	if err := os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A process in a new user namespace (root in it, mapped to the host's
	// root) and a mount namespace that user namespace owns.
	cmd := exec.Command("unshare", "--user", "--map-root-user", "--mount", "--propagation", "private", "sh", "-c", "echo ready; exec sleep 3600")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("unshare: %q %v", line, err)
	}
	pid := cmd.Process.Pid
	if err := m.Attach(context.Background(), mounter.Container{ID: "c", Pid: pid, Rootfs: rootfs}); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	a, b := filepath.Join(rootfs, "run/secrets/d/a"), filepath.Join(rootfs, "etc/b")
	script := strings.Join([]string{
		"set -e",
		"mount -o remount,bind,rw " + a,
		"mount -o remount,bind,rw " + b,
		"echo appended-past-the-secret >> " + a,
		"head -c 3000 /dev/zero | tr '\\0' x >> " + b,
	}, "\n")
	c := exec.Command("nsenter", "-t", itoa(pid), "--user", "--mount", "--preserve-credentials", "sh", "-c", script)
	if out, err := c.CombinedOutput(); err != nil {
		// The kernel locked the flags after all: nothing to wipe beyond
		// the plan. Say so rather than pass silently.
		t.Fatalf("the container could not write its secrets mount (has the kernel started locking moved mounts? then this test needs another way in): %v: %s", err, out)
	}
	// Views as the container holds them: they outlive the wipe.
	view := func(p string) int {
		fd, err := unix.Open("/proc/"+itoa(pid)+"/root"+p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	aView, bView := view(a), view(b)
	var st unix.Stat_t
	if err := unix.Fstat(bView, &st); err != nil || st.Size < 3000 {
		t.Fatalf("the container's appends did not land: %d bytes, %v", st.Size, err)
	}

	if err := m.Wipe(); err != nil {
		t.Errorf("Wipe: %v", err)
	}
	for name, fd := range map[string]int{a: aView, b: bView} {
		var sfs unix.Statfs_t
		if err := unix.Fstatfs(fd, &sfs); err != nil {
			t.Fatal(err)
		}
		if sfs.Bfree != sfs.Blocks {
			t.Errorf("%s: the tmpfs still holds %d of %d blocks after the wipe", name, sfs.Blocks-sfs.Bfree, sfs.Blocks)
		}
		if err := unix.Fstat(fd, &st); err != nil || st.Size != 0 {
			t.Errorf("%s: %d bytes after the wipe (%v)", name, st.Size, err)
		}
	}
}
