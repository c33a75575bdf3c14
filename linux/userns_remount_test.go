//go:build linux

package linux

import (
	"bufio"
	"context"
	"errors"
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
// (measured here). It can only change its own secrets, but the wipe must
// still leave nothing behind: not a copy it made next to them, not bytes
// it appended past a secret's size, and it must not fail on a directory
// the container filled.
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
	secrets, b := filepath.Join(rootfs, "run/secrets"), filepath.Join(rootfs, "etc/b")
	script := strings.Join([]string{
		"set -e",
		"mount -o remount,bind,rw " + secrets,
		"mount -o remount,bind,rw " + b,
		"cp " + secrets + "/d/a " + secrets + "/copy",
		"mkdir -p " + secrets + "/d/sub",
		"mkfifo " + secrets + "/d/sub/fifo",
		"echo appended-past-the-secret >> " + b,
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
	dirView, fileView := view(secrets), view(b)

	if err := m.Wipe(); err != nil {
		t.Errorf("Wipe: %v", err)
	}
	for name, fd := range map[string]int{"/run/secrets": dirView, "/etc/b": fileView} {
		var sfs unix.Statfs_t
		if err := unix.Fstatfs(fd, &sfs); err != nil {
			t.Fatal(err)
		}
		if sfs.Bfree != sfs.Blocks {
			t.Errorf("%s: the tmpfs still holds %d of %d blocks after the wipe", name, sfs.Blocks-sfs.Bfree, sfs.Blocks)
		}
	}
	// The directory itself is gone (ENOENT on reading it), or at least
	// empty.
	if names, err := readDirNames(dirView); (err != nil && !errors.Is(err, unix.ENOENT)) || len(names) > 2 {
		t.Errorf("/run/secrets after the wipe holds %v (%v)", names, err)
	}
}
