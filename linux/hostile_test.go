//go:build linux

package linux

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/mounter"
)

// TestAttachHostileRootfs attaches into containers whose image tries to
// redirect the mounts out of the container's root with symlinks. Whatever
// the image does, nothing may be created or mounted outside the container's
// root; the assertions look at the host's files.
func TestAttachHostileRootfs(t *testing.T) {
	src := memSource{"id-a": secretData("a", 10), "id-b": secretData("b", 20)}

	// Canary directories on the host that symlinks in the images point at.
	canary := t.TempDir()
	hostEtcSecrets := "/etc/secrets"
	if _, err := os.Lstat(hostEtcSecrets); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s exists on the host before the test", hostEtcSecrets)
	}
	shadow, err := os.Stat("/etc/shadow")
	if err != nil {
		t.Fatal(err)
	}

	symlink := func(rootfs, name, to string) {
		t.Helper()
		p := filepath.Join(rootfs, name)
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(to, p); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		name    string
		grants  []mounter.Grant
		prepare func(t *testing.T, rootfs string)
		wantErr string // empty: the attach succeeds, inside the root
		// check runs after the attach with the container's rootfs.
		check func(t *testing.T, r *busybox.Runc, id, rootfs string)
	}{
		{
			name:   "/run is a symlink to /etc",
			grants: []mounter.Grant{{SecretID: "id-a", SecretName: "a"}},
			prepare: func(t *testing.T, rootfs string) {
				symlink(rootfs, "run", "/etc")
			},
			check: func(t *testing.T, r *busybox.Runc, id, rootfs string) {
				// Resolved inside the root: the container's /etc/secrets.
				if got := execOK(t, r, id, "cat /etc/secrets/a"); got != string(src["id-a"]) {
					t.Errorf("container reads %q", got)
				}
				if st, err := os.Stat(filepath.Join(rootfs, "etc/secrets")); err != nil || !st.IsDir() {
					t.Errorf("mountpoint not made in the rootfs: %v", err)
				}
			},
		},
		{
			name:   "/run/secrets is a symlink to /",
			grants: []mounter.Grant{{SecretID: "id-a", SecretName: "a"}},
			prepare: func(t *testing.T, rootfs string) {
				symlink(rootfs, "run/secrets", "/")
			},
			// A single-file mount: it lands at the root's /a, inside
			// the root, and hides nothing but that name.
			check: func(t *testing.T, r *busybox.Runc, id, rootfs string) {
				if got := execOK(t, r, id, "cat /a; ls /bin/sh"); got != string(src["id-a"])+"/bin/sh\n" {
					t.Errorf("container sees %q", got)
				}
				if st, err := os.Lstat(filepath.Join(rootfs, "a")); err != nil || !st.Mode().IsRegular() || st.Size() != 0 {
					t.Errorf("mountpoint not made inside the rootfs: %v", err)
				}
			},
		},
		{
			name:   "/run/secrets is a symlink to ../../../.. (relative escape)",
			grants: []mounter.Grant{{SecretID: "id-a", SecretName: "a"}},
			prepare: func(t *testing.T, rootfs string) {
				symlink(rootfs, "run/secrets", "../../../../../../..")
			},
			check: func(t *testing.T, r *busybox.Runc, id, rootfs string) {
				if got := execOK(t, r, id, "cat /a"); got != string(src["id-a"]) {
					t.Errorf("container reads %q", got)
				}
				if st, err := os.Lstat(filepath.Join(rootfs, "a")); err != nil || !st.Mode().IsRegular() || st.Size() != 0 {
					t.Errorf("mountpoint not made inside the rootfs: %v", err)
				}
			},
		},
		{
			name:   "/run/secrets is a symlink into /proc",
			grants: []mounter.Grant{{SecretID: "id-a", SecretName: "a", Target: "kernel/core_pattern"}},
			prepare: func(t *testing.T, rootfs string) {
				symlink(rootfs, "run/secrets", "/proc/sys")
			},
			wantErr: "resolves into /proc or /sys",
		},
		{
			name:   "absolute target under a symlink to a host path",
			grants: []mounter.Grant{{SecretID: "id-b", SecretName: "b", Target: "/etc/app/key"}},
			prepare: func(t *testing.T, rootfs string) {
				symlink(rootfs, "etc/app", canary)
			},
			// The host path does not exist inside the root: dangling.
			wantErr: "a symlink to nothing inside the container",
		},
		{
			name:   "absolute target under a symlink to a path that exists in both",
			grants: []mounter.Grant{{SecretID: "id-b", SecretName: "b", Target: "/etc/app/key"}},
			prepare: func(t *testing.T, rootfs string) {
				symlink(rootfs, "etc/app", canary)
				if err := os.MkdirAll(filepath.Join(rootfs, canary), 0o755); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, r *busybox.Runc, id, rootfs string) {
				if got := execOK(t, r, id, "cat /etc/app/key"); got != string(src["id-b"]) {
					t.Errorf("container reads %q", got)
				}
				if st, err := os.Stat(filepath.Join(rootfs, canary, "key")); err != nil || st.Size() != 0 {
					t.Errorf("mountpoint not made inside the rootfs: %v", err)
				}
			},
		},
		{
			name:   "absolute target under a relative symlink escaping the root",
			grants: []mounter.Grant{{SecretID: "id-b", SecretName: "b", Target: "/opt/x/key"}},
			prepare: func(t *testing.T, rootfs string) {
				symlink(rootfs, "opt", strings.Repeat("../", 20)+strings.TrimPrefix(canary, "/"))
				if err := os.MkdirAll(filepath.Join(rootfs, canary), 0o755); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, r *busybox.Runc, id, rootfs string) {
				if got := execOK(t, r, id, "cat /opt/x/key"); got != string(src["id-b"]) {
					t.Errorf("container reads %q", got)
				}
				if st, err := os.Stat(filepath.Join(rootfs, canary, "x/key")); err != nil || st.Size() != 0 {
					t.Errorf("mountpoint not made inside the rootfs: %v", err)
				}
			},
		},
		{
			name:   "/run/secrets is a relative symlink escaping to a host dir",
			grants: []mounter.Grant{{SecretID: "id-a", SecretName: "a"}},
			prepare: func(t *testing.T, rootfs string) {
				symlink(rootfs, "run/secrets", strings.Repeat("../", 20)+strings.TrimPrefix(canary, "/"))
			},
			wantErr: "a symlink to nothing inside the container",
		},
		{
			name:   "target is a dangling symlink",
			grants: []mounter.Grant{{SecretID: "id-b", SecretName: "b", Target: "/etc/key"}},
			prepare: func(t *testing.T, rootfs string) {
				symlink(rootfs, "etc/key", "/nonexistent/dir/key")
			},
			wantErr: "a symlink to nothing",
		},
		{
			name:   "target is a directory",
			grants: []mounter.Grant{{SecretID: "id-b", SecretName: "b", Target: "/etc"}},
			prepare: func(t *testing.T, rootfs string) {
			},
			wantErr: "not a regular file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, m := build(t, tt.grants, src)
			r, b, id, pid := runContainerWith(t, busybox.Options{}, func(rootfs string) { tt.prepare(t, rootfs) })
			err := m.Attach(context.Background(), mounter.Container{ID: id, Pid: pid})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Attach = %v, want an error containing %q", err, tt.wantErr)
				}
				t.Log(err)
			} else if err != nil {
				t.Fatalf("Attach: %v", err)
			}
			if tt.check != nil {
				tt.check(t, r, id, b.Rootfs)
			}
			// Nothing outside the root.
			if _, err := os.Lstat(hostEtcSecrets); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s appeared on the host", hostEtcSecrets)
			}
			if ents, err := os.ReadDir(canary); err != nil || len(ents) != 0 {
				t.Errorf("host canary dir %s holds %v (%v)", canary, ents, err)
			}
			if st, err := os.Stat("/etc/shadow"); err != nil || !st.ModTime().Equal(shadow.ModTime()) || st.Size() != shadow.Size() {
				t.Errorf("/etc/shadow changed on the host")
			}
			if mountinfoHas(t, "/proc/self/mountinfo", 0, "/etc/secrets") || mountinfoHas(t, "/proc/self/mountinfo", 0, canary) {
				t.Error("a mount appeared in the host's mount table")
			}
		})
	}

	// A target climbing out with ".." never reaches the mounter.
	_, err = mounter.NewPlan(mounter.Linux, []mounter.Grant{{SecretID: "id-a", SecretName: "a", Target: "../../etc/shadow", Size: 10}})
	var ve *mounter.ValidationError
	if !errors.As(err, &ve) || ve.Field != "target" {
		t.Errorf("plan with ../../etc/shadow: %v", err)
	}
}
