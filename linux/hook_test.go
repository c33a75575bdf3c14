//go:build linux

package linux

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/mounter"
)

// hookEnv names the socket the test binary, run by runc as a
// createContainer hook, fetches its mounts from.
const hookEnv = "LOCKBOX_LINUX_TEST_HOOK_SOCKET"

// The main goroutine keeps the main thread for the whole run: no test
// goroutine that changes its thread's namespaces can land there, where the
// change would show in /proc/self and never be undone.
func init() { runtime.LockOSThread() }

// mainThreadCheck is what runLocked did when called on the main thread,
// recorded by TestMain for TestRunLockedOnMainThread.
var mainThreadCheck struct {
	ranOn        int
	nsBefore     string
	nsAfter      string
	innerNS      string
	err          error
	mainThreadID int
}

func TestMain(m *testing.M) {
	if sock := os.Getenv(hookEnv); sock != "" {
		if err := hookMain(sock); err != nil {
			fmt.Fprintln(os.Stderr, "hook:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// The one place a test runs on the main thread: check that runLocked
	// moves fn elsewhere and leaves this thread's namespace alone.
	c := &mainThreadCheck
	c.mainThreadID = unix.Gettid()
	c.nsBefore, _ = os.Readlink("/proc/thread-self/ns/mnt")
	c.err = runLocked(func() error {
		c.ranOn = unix.Gettid()
		if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
			return err
		}
		c.innerNS, _ = os.Readlink("/proc/thread-self/ns/mnt")
		return nil
	})
	c.nsAfter, _ = os.Readlink("/proc/thread-self/ns/mnt")

	os.Exit(m.Run())
}

// hookMain is what an OCI createContainer hook does: it runs in the
// container's mount namespace with the rootfs as its cwd, receives the mount
// fds over a unix socket with SCM_RIGHTS, and attaches them.
func hookMain(sock string) error {
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return err
	}
	defer conn.Close()
	buf, oob := make([]byte, 64<<10), make([]byte, unix.CmsgSpace(64*4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return err
	}
	var targets []string
	if err := json.Unmarshal(buf[:n], &targets); err != nil {
		return err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fmt.Errorf("control messages: %v (%d)", err, len(msgs))
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != len(targets) {
		return fmt.Errorf("fds: %v (%d for %d targets)", err, len(fds), len(targets))
	}
	hs := make([]mounter.Handover, len(fds))
	for i, fd := range fds {
		hs[i] = mounter.Handover{Target: targets[i], File: os.NewFile(uintptr(fd), targets[i])}
	}
	defer closeHandovers(hs)
	rootfs, err := os.Getwd()
	if err != nil {
		return err
	}
	err = AttachHandovers(rootfs, hs)
	reply := "ok"
	if err != nil {
		reply = err.Error()
	}
	_, _ = conn.Write([]byte(reply))
	return err
}

func TestRunLockedOnMainThread(t *testing.T) {
	c := mainThreadCheck
	if c.err != nil {
		t.Fatal(c.err)
	}
	if c.mainThreadID != os.Getpid() {
		t.Fatalf("TestMain ran on thread %d, not the main thread %d", c.mainThreadID, os.Getpid())
	}
	if c.ranOn == c.mainThreadID {
		t.Error("fn ran on the main thread")
	}
	if c.nsBefore == "" || c.nsBefore != c.nsAfter {
		t.Errorf("main thread's mount namespace %q became %q", c.nsBefore, c.nsAfter)
	}
	if c.innerNS == c.nsBefore {
		t.Errorf("fn did not get its own namespace: %q", c.innerNS)
	}
}

// serveHandover sends m's handovers to one hook connection and returns the
// hook's reply.
func serveHandover(t *testing.T, ln *net.UnixListener, m *Mount, c mounter.Container) <-chan string {
	replies := make(chan string, 1)
	go func() {
		conn, err := ln.AcceptUnix()
		if err != nil {
			replies <- "accept: " + err.Error()
			return
		}
		defer conn.Close()
		hs, err := m.Handover(c)
		if err != nil {
			replies <- "handover: " + err.Error()
			return
		}
		defer closeHandovers(hs)
		targets := make([]string, len(hs))
		fds := make([]int, len(hs))
		for i, h := range hs {
			targets[i], fds[i] = h.Target, int(h.File.Fd())
		}
		data, _ := json.Marshal(targets)
		if _, _, err := conn.WriteMsgUnix(data, unix.UnixRights(fds...), nil); err != nil {
			replies <- "send: " + err.Error()
			return
		}
		buf := make([]byte, 4096)
		n, _ := conn.Read(buf)
		replies <- string(buf[:n])
	}()
	return replies
}

// TestAttachFromHook runs the real flow of the OCI hook: runc runs a
// createContainer hook (this test binary) inside the container's mount
// namespace before pivot_root; it gets the mount fds over a unix socket and
// attaches them. The rootfs is read-only, which a hook does not mind: runc
// makes it read-only only after the hooks ran.
func TestAttachFromHook(t *testing.T) {
	src := memSource{"id-a": secretData("a", 64), "id-b": secretData("b", 128)}
	_, m := build(t, []mounter.Grant{
		{SecretID: "id-a", SecretName: "a", UID: "1000", Mode: 0o400},
		{SecretID: "id-b", SecretName: "b", Target: "/etc/b.conf"},
	}, src)

	dir := t.TempDir()
	sock := filepath.Join(dir, "hook.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	replies := serveHandover(t, ln, m, mounter.Container{})

	o := busybox.Options{
		ReadonlyRootfs: true,
		User:           specs.User{UID: 1000, GID: 1000},
		Hooks: &specs.Hooks{CreateContainer: []specs.Hook{{
			Path: self, Args: []string{"hook"}, Env: []string{hookEnv + "=" + sock},
		}}},
	}
	b, err := busybox.NewBundle(filepath.Join(dir, "bundle"), o)
	if err != nil {
		t.Fatal(err)
	}
	r := busybox.NewRunc(t)
	ctx := busybox.Context(t)
	if err := r.Run(ctx, "hook", b); err != nil {
		t.Fatal(err)
	}
	if reply := <-replies; reply != "ok" {
		t.Fatalf("hook: %s", reply)
	}
	got := execOK(t, r, "hook", "stat -c '%u %a' /run/secrets/a; cat /run/secrets/a /etc/b.conf; echo x > /etc/b.conf 2>/dev/null || echo ro; touch /new 2>/dev/null || echo rootfs ro")
	if want := "1000 400\n" + string(src["id-a"]) + string(src["id-b"]) + "ro\nrootfs ro\n"; got != want {
		t.Errorf("container sees %q, want %q", got, want)
	}
	if mountinfoHas(t, "/proc/self/mountinfo", 0, b.Rootfs) {
		t.Error("the host's mountinfo shows a mount in the container's rootfs")
	}
	if err := r.Delete(context.Background(), "hook"); err != nil {
		t.Fatal(err)
	}
	if err := m.Wipe(); err != nil {
		t.Fatal(err)
	}
}
