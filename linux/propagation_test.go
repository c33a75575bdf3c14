//go:build linux

package linux

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/mounter"
)

// checkPaths runs test once for each way refuseShared can tell a shared
// mount: statmount (Linux 6.8, this machine's) and mountinfo (older
// kernels), which is forced here.
func checkPaths(t *testing.T, test func(t *testing.T)) {
	if haveStatmount() {
		t.Run("statmount", test)
	}
	t.Run("mountinfo", func(t *testing.T) {
		orig := haveStatmount
		haveStatmount = func() bool { return false }
		t.Cleanup(func() { haveStatmount = orig })
		test(t)
	})
}

// TestRefuseShared attaches in a private namespace onto a tmpfs that is
// shared, then private: only the private one is accepted. The attach runs
// on a thread whose mount namespace the rest of the process does not
// share, as the agent's does.
func TestRefuseShared(t *testing.T) { checkPaths(t, testRefuseShared) }

func testRefuseShared(t *testing.T) {
	src := memSource{"a": secretData("a", 10)}
	for _, shared := range []bool{true, false} {
		_, m := build(t, []mounter.Grant{{SecretID: "a", SecretName: "a", Target: "/data/a"}}, src)
		root := t.TempDir()
		var err error
		_ = onThrowawayThread(func() error {
			if err = unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
				return nil
			}
			if err = unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return nil
			}
			if err = unix.Mount("tmpfs", root, "tmpfs", 0, "size=64k"); err != nil {
				return nil
			}
			prop := uintptr(unix.MS_PRIVATE)
			if shared {
				prop = unix.MS_SHARED
			}
			if err = unix.Mount("", root, "", prop, ""); err != nil {
				return nil
			}
			var hs []mounter.Handover
			if hs, err = m.Handover(mounter.Container{}); err != nil {
				return nil
			}
			defer closeHandovers(hs)
			err = AttachHandovers(root, hs)
			return nil
		})
		if shared && !errors.Is(err, ErrSharedMountpoint) {
			t.Errorf("attach onto a shared mount: %v, want ErrSharedMountpoint", err)
		}
		if !shared && err != nil {
			t.Errorf("attach onto a private mount: %v", err)
		}
	}
}

// TestRefuseSharedVolume is the case the check exists for: a container
// volume with shared propagation ("rshared", Kubernetes' Bidirectional)
// whose peer is in the host's namespace. A secret mounted there would show
// up on the host; the attach is refused and the host's table stays clean.
func TestRefuseSharedVolume(t *testing.T) { checkPaths(t, testRefuseSharedVolume) }

func testRefuseSharedVolume(t *testing.T) {
	vol := t.TempDir()
	if err := unix.Mount(vol, vol, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(vol, unix.MNT_DETACH) })
	if err := unix.Mount("", vol, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	src := memSource{"a": secretData("a", 10)}
	_, m := build(t, []mounter.Grant{{SecretID: "a", SecretName: "a", Target: "/data/a"}}, src)
	o := busybox.Options{Mounts: []specs.Mount{{Destination: "/data", Type: "none", Source: vol, Options: []string{"rbind", "rshared"}}}}
	r, _, id, pid := runContainer(t, o)
	err := m.Attach(context.Background(), mounter.Container{ID: id, Pid: pid})
	if !errors.Is(err, ErrSharedMountpoint) {
		t.Fatalf("Attach = %v, want ErrSharedMountpoint", err)
	}
	if mountinfoHas(t, "/proc/self/mountinfo", 0, filepath.Join(vol, "a")) {
		t.Error("the secret's mount propagated to the host")
	}
	if err := r.Delete(busybox.Context(t), id); err != nil {
		t.Fatal(err)
	}
}

func TestMountinfoShared(t *testing.T) {
	const info = `22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw
23 22 0:5 / /dev rw master:2 - devtmpfs udev rw
24 1 0:22 / /run rw,nosuid shared:5 master:3 - tmpfs tmpfs rw
25 1 0:23 / /data\040dir rw - ext4 /dev/sda1 rw
26 1 0:24 / /odd rw - shared:7 shared:7 rw
`
	tests := []struct {
		id      uint64
		shared  bool
		wantErr bool
	}{
		{22, true, false},
		{23, false, false}, // a slave only receives
		{24, true, false},  // shared and slave
		{25, false, false},
		{26, false, false}, // "shared:" after the separator is not a propagation field
		{99, false, true},
	}
	for _, tt := range tests {
		got, err := mountinfoShared(strings.NewReader(info), tt.id)
		if got != tt.shared || (err != nil) != tt.wantErr {
			t.Errorf("mount %d: shared %v, %v; want %v, error %v", tt.id, got, err, tt.shared, tt.wantErr)
		}
	}
}

// TestMountIDFromFdinfo: kernels before 5.8 have no STATX_MNT_ID; the
// mount ID then comes from fdinfo, which must agree with statx here.
func TestMountIDFromFdinfo(t *testing.T) {
	fd, err := unix.Open("/", unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	b, err := os.ReadFile("/proc/thread-self/fdinfo/" + itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	got, err := fdinfoMountID(b)
	if want := mountID(t, fd); err != nil || got != want {
		t.Errorf("fdinfo mount ID %d, %v; statx says %d", got, err, want)
	}
	for _, bad := range []string{"pos:\t0\nflags:\t0\n", "mnt_id:\tx\n", ""} {
		if _, err := fdinfoMountID([]byte(bad)); err == nil {
			t.Errorf("fdinfo %q: no error", bad)
		}
	}
}
