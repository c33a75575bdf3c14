//go:build linux

package linux

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/mounter"
)

// TestRefuseShared attaches in a private namespace onto a tmpfs that is
// shared, then private: only the private one is accepted.
func TestRefuseShared(t *testing.T) {
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
func TestRefuseSharedVolume(t *testing.T) {
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
