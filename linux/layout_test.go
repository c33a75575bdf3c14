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

// serviceAccountDir is where Kubernetes mounts a pod's service-account
// token, seen through /var/run -> /run in most images.
const serviceAccountDir = "/run/secrets/kubernetes.io/serviceaccount"

// hostTokenDir makes a host directory holding a token file, for a
// container to bind read-only as Kubernetes does.
func hostTokenDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("sa-token"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A claim hides nothing the container has under /run/secrets: not a file
// of its image, not a volume mounted there (the service-account token).
// Every secret is a single read-only file, nested targets included.
func TestAttachKeepsWhatTheContainerHas(t *testing.T) {
	src := memSource{"id-pw": secretData("pw", 32), "id-c": secretData("c", 100)}
	_, m := build(t, []mounter.Grant{
		{SecretID: "id-pw", SecretName: "db_pw"},
		{SecretID: "id-c", SecretName: "c", Target: "a/b/c", Mode: 0o440},
	}, src)
	o := busybox.Options{Mounts: []specs.Mount{
		{Destination: serviceAccountDir, Type: "bind", Source: hostTokenDir(t), Options: []string{"rbind", "ro"}},
	}}
	r, _, id, pid := runContainerWith(t, o, func(rootfs string) {
		if err := os.MkdirAll(filepath.Join(rootfs, "run/secrets"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(rootfs, "run/secrets/keep"), []byte("image-file"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	if err := m.Attach(context.Background(), mounter.Container{ID: id, Pid: pid}); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	got := execOK(t, r, id, "cat /run/secrets/keep; echo; cat "+serviceAccountDir+"/token; echo; cat /run/secrets/db_pw; echo; cat /run/secrets/a/b/c; echo; stat -c '%a' /run/secrets/a/b/c")
	want := "image-file\nsa-token\n" + string(src["id-pw"]) + "\n" + string(src["id-c"]) + "\n440\n"
	if got != want {
		t.Errorf("container sees:\n%s\nwant:\n%s", got, want)
	}
	for _, script := range []string{"echo x > /run/secrets/db_pw", "echo x > /run/secrets/a/b/c", "rm /run/secrets/a/b/c"} {
		if _, _, err := r.Exec(busybox.Context(t), id, "sh", "-c", script); err == nil {
			t.Errorf("%q succeeded in the container", script)
		}
	}
	// No mount covers a directory: only the two files are Lockbox's.
	mi := execOK(t, r, id, "grep ' - tmpfs ' /proc/self/mountinfo | grep -E ' /run/secrets[^ ]* ' || true")
	lines := strings.Split(strings.TrimSpace(mi), "\n")
	if len(lines) != 2 || !strings.Contains(mi, " /run/secrets/db_pw ") || !strings.Contains(mi, " /run/secrets/a/b/c ") {
		t.Errorf("tmpfs mounts under /run/secrets:\n%s\nwant the two secret files only", mi)
	}
	for _, l := range lines {
		if !strings.Contains(l, " ro,") {
			t.Errorf("mount %q is not read-only", l)
		}
	}
}

// A target that is already a mount in the container is refused with an
// error naming the secret and the target, unless the mount is a bind of
// the agent's own mountpoint file (another empty file does not pass).
func TestAttachTargetOnAMount(t *testing.T) {
	src := memSource{"id-t": secretData("t", 10)}
	mp := testMountpointSource(t)
	other := testMountpointSource(t) // the same shape, not the agent's
	target := serviceAccountDir + "/token"
	tokenDir := hostTokenDir(t)
	tests := []struct {
		name   string
		mounts []specs.Mount
		ok     bool
	}{
		{"a volume's file", []specs.Mount{{Destination: target, Type: "bind", Source: filepath.Join(tokenDir, "token"), Options: []string{"bind", "ro"}}}, false},
		// Kubernetes' shape: the token is a file in a directory volume.
		{"a file in a volume", []specs.Mount{{Destination: serviceAccountDir, Type: "bind", Source: tokenDir, Options: []string{"rbind", "ro"}}}, false},
		{"another empty file", mountpointMounts(other, target), false},
		{"the agent's mountpoint bind", mountpointMounts(mp, target), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, m := buildWith(t, []mounter.Grant{{SecretID: "id-t", SecretName: "sa", Target: "kubernetes.io/serviceaccount/token"}}, src, mp)
			r, _, id, pid := runContainer(t, busybox.Options{Mounts: tt.mounts})
			err := m.Attach(context.Background(), mounter.Container{ID: id, Pid: pid})
			if !tt.ok {
				if !errors.Is(err, ErrMountCollision) || !strings.Contains(err.Error(), `"sa"`) || !strings.Contains(err.Error(), target) ||
					!strings.Contains(err.Error(), "collides with a mount the container already has") {
					t.Fatalf("Attach = %v, want the collision named", err)
				}
				t.Log(err)
				if tt.name != "another empty file" {
					if got := execOK(t, r, id, "cat "+target); got != "sa-token" {
						t.Errorf("the volume's file reads %q", got)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Attach: %v", err)
			}
			if got := execOK(t, r, id, "cat "+target); got != string(src["id-t"]) {
				t.Errorf("container reads %q", got)
			}
		})
	}
}

func TestEnsureMountpointSource(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "mountpoint")
	check := func() {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode != unix.S_IFREG|0o444 || st.Size != 0 || st.Uid != 0 || st.Gid != 0 {
			t.Fatalf("mountpoint file: mode %o, %d bytes, %d:%d", st.Mode, st.Size, st.Uid, st.Gid)
		}
		if own := ownBindAt(p); !own.ok || own.ino != st.Ino {
			t.Fatalf("ownBindAt = %+v", own)
		}
	}
	if err := EnsureMountpointSource(p); err != nil {
		t.Fatal(err)
	}
	check()
	var before unix.Stat_t
	unix.Lstat(p, &before)
	if err := EnsureMountpointSource(p); err != nil {
		t.Fatal(err)
	}
	var after unix.Stat_t
	unix.Lstat(p, &after)
	if before.Ino != after.Ino {
		t.Error("a good mountpoint file was replaced")
	}
	// Content, a wrong mode, a symlink: replaced by an empty file.
	for _, spoil := range []func(){
		func() { os.Chmod(p, 0o644); os.WriteFile(p, []byte("x"), 0o644) },
		func() { os.Chmod(p, 0o666) },
		func() { os.Remove(p); os.Symlink("/etc/shadow", p) },
	} {
		spoil()
		if err := EnsureMountpointSource(p); err != nil {
			t.Fatal(err)
		}
		check()
	}
	if ents, _ := os.ReadDir(filepath.Dir(p)); len(ents) != 1 {
		t.Errorf("the directory holds %v, want the mountpoint file alone", ents)
	}
	os.Remove(p)
	os.Mkdir(p, 0o755)
	if err := EnsureMountpointSource(p); err == nil {
		t.Error("a directory in the way was accepted")
	}
}
