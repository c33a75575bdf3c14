//go:build linux

package linux

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/mounter"
)

// runContainer starts a busybox container running sleep and returns the
// runc driver, its bundle, the container's ID and its pid.
func runContainer(t *testing.T, o busybox.Options) (*busybox.Runc, *busybox.Bundle, string, int) {
	return runContainerWith(t, o, nil)
}

// runContainerWith is runContainer with a hook to shape the rootfs first.
func runContainerWith(t *testing.T, o busybox.Options, prepare func(rootfs string)) (*busybox.Runc, *busybox.Bundle, string, int) {
	t.Helper()
	b, err := busybox.NewBundle(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(b.Rootfs)
	}
	r := busybox.NewRunc(t)
	id := regexp.MustCompile(`[^a-zA-Z0-9_.-]+`).ReplaceAllString(t.Name(), "-")
	ctx := busybox.Context(t)
	if err := r.Run(ctx, id, b); err != nil {
		t.Fatal(err)
	}
	pid, err := r.Pid(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return r, b, id, pid
}

// execOK runs a shell command in the container and returns its stdout.
func execOK(t *testing.T, r *busybox.Runc, id, script string) string {
	t.Helper()
	out, errOut, err := r.Exec(busybox.Context(t), id, "sh", "-c", script)
	if err != nil {
		t.Fatalf("exec %q: %v: %s", script, err, errOut)
	}
	return out
}

func TestAttachByPid(t *testing.T) {
	src := memSource{
		"id-pw":  secretData("pw", 32),
		"id-pem": secretData("pem", 5000),
		"id-key": secretData("key", 700),
		"id-k2":  secretData("k2", 9),
	}
	grants := []mounter.Grant{
		{SecretID: "id-pw", SecretName: "db_pw", UID: "1000", GID: "1000", Mode: 0o400},
		{SecretID: "id-pem", SecretName: "pem", Target: "conf/app.pem"},
		{SecretID: "id-key", SecretName: "key", Target: "/etc/app/key", UID: "0", GID: "1000", Mode: 0o440},
		// Same base name as the previous target, elsewhere: no collision.
		{SecretID: "id-k2", SecretName: "k2", Target: "/opt/key", Mode: 0o404},
	}
	_, m := build(t, grants, src)
	r, b, id, pid := runContainer(t, busybox.Options{User: specs.User{UID: 1000, GID: 1000}})

	if err := m.Attach(context.Background(), mounter.Container{ID: id, Pid: pid}); err != nil {
		t.Fatalf("Attach: %v", err)
	}

	got := execOK(t, r, id, `cd /run/secrets && for f in db_pw conf/app.pem /etc/app/key /opt/key; do echo "$f $(stat -c '%u:%g %a %s' $f) $(md5sum < $f)"; done; ls -a /run/secrets | tr '\n' ' '`)
	md5 := func(b []byte) string { return md5sum(b) + "  -" }
	want := strings.Join([]string{
		"db_pw 1000:1000 400 32 " + md5(src["id-pw"]),
		"conf/app.pem 0:0 444 5000 " + md5(src["id-pem"]),
		"/etc/app/key 0:1000 440 700 " + md5(src["id-key"]),
		"/opt/key 0:0 404 9 " + md5(src["id-k2"]),
		". .. conf db_pw ",
	}, "\n")
	if got != want {
		t.Errorf("container sees:\n%s\nwant:\n%s", got, want)
	}

	// Read-only, and nosuid,nodev,noexec. /run/secrets itself is the
	// container's own directory, as under Docker: only the files are
	// mounts.
	for _, script := range []string{
		"echo x > /run/secrets/db_pw", "rm /run/secrets/db_pw", "echo x > /run/secrets/conf/app.pem",
		"echo x > /opt/key", "mv /opt/key /opt/key2",
	} {
		if _, _, err := r.Exec(busybox.Context(t), id, "sh", "-c", script); err == nil {
			t.Errorf("%q succeeded in the container", script)
		}
	}
	// One single-file mount per target, none on a directory.
	mi := execOK(t, r, id, "grep -E ' (/run/secrets[^ ]*|/etc/app/key|/opt/key) ' /proc/self/mountinfo")
	if lines := strings.Split(strings.TrimSpace(mi), "\n"); len(lines) != 4 || strings.Contains(mi, " /run/secrets ") || strings.Contains(mi, " /run/secrets/conf ") {
		t.Errorf("container mountinfo:\n%s", mi)
	}
	for _, l := range strings.Split(strings.TrimSpace(mi), "\n") {
		if !strings.Contains(l, " ro,nosuid,nodev,noexec") || !strings.Contains(l, "- tmpfs ") {
			t.Errorf("mount %q is not a ro,nosuid,nodev,noexec tmpfs", l)
		}
		if kernelAtLeast(t, 6, 4) && !strings.HasSuffix(l, ",noswap") {
			t.Errorf("mount %q is swappable", l)
		}
	}

	// The host sees no trace: no mount, and nothing but empty mountpoints
	// in the container's rootfs (a commit of it holds no secret).
	if mountinfoHas(t, "/proc/self/mountinfo", 0, b.Rootfs) {
		mi, _ := os.ReadFile("/proc/self/mountinfo")
		t.Errorf("the host's mountinfo shows a mount in the container's rootfs:\n%s", mi)
	}
	for _, p := range []string{"run/secrets/db_pw", "run/secrets/conf/app.pem", "etc/app/key", "opt/key"} {
		st, err := os.Lstat(filepath.Join(b.Rootfs, p))
		if err != nil {
			t.Fatal(err)
		}
		if !st.Mode().IsRegular() || st.Size() != 0 {
			t.Errorf("rootfs %s: %v, %d bytes; want an empty file", p, st.Mode(), st.Size())
		}
	}

	// Wipe while the container runs: it sees empty files.
	if err := m.Wipe(); err != nil {
		t.Fatal(err)
	}
	if got := execOK(t, r, id, "stat -c %s /run/secrets/db_pw /run/secrets/conf/app.pem /opt/key"); got != "0\n0\n0\n" {
		t.Errorf("after the wipe the container sees %q", got)
	}
}

func TestAttachReadonlyRootfs(t *testing.T) {
	src := memSource{"id-a": secretData("a", 10), "id-b": secretData("b", 20)}
	t.Run("no mountpoint", func(t *testing.T) {
		_, m := build(t, []mounter.Grant{{SecretID: "id-a", SecretName: "a"}}, src)
		_, _, id, pid := runContainer(t, busybox.Options{ReadonlyRootfs: true})
		err := m.Attach(context.Background(), mounter.Container{ID: id, Pid: pid, ReadonlyRootfs: true})
		if !errors.Is(err, ErrNoMountpoint) {
			t.Fatalf("Attach = %v, want ErrNoMountpoint", err)
		}
		t.Log(err)
	})
	t.Run("mountpoint binds", func(t *testing.T) {
		// The adapter adds a read-only bind of the agent's empty file at
		// every target (claim.MountpointMounts); runc makes the files and
		// their directories (/etc/app is not in the image) before the
		// root turns read-only.
		src := memSource{"id-a": secretData("a", 10), "id-b": secretData("b", 20)}
		mp := testMountpointSource(t)
		_, m := buildWith(t, []mounter.Grant{
			{SecretID: "id-a", SecretName: "a"},
			{SecretID: "id-b", SecretName: "b", Target: "/etc/app/cert.pem", UID: "1000", Mode: 0o400},
		}, src, mp)
		o := busybox.Options{ReadonlyRootfs: true, Mounts: mountpointMounts(mp, "/run/secrets/a", "/etc/app/cert.pem")}
		r, _, id, pid := runContainer(t, o)
		if err := m.Attach(context.Background(), mounter.Container{ID: id, Pid: pid, ReadonlyRootfs: true}); err != nil {
			t.Fatalf("Attach: %v", err)
		}
		if got := execOK(t, r, id, "cat /run/secrets/a; stat -c '%u:%g %a %s' /etc/app/cert.pem"); got != string(src["id-a"])+"1000:0 400 20\n" {
			t.Errorf("container sees %q", got)
		}
		if _, _, err := r.Exec(busybox.Context(t), id, "sh", "-c", "echo x > /run/secrets/a"); err == nil {
			t.Error("the container wrote its secret")
		}
	})
}

func TestAttachUserNamespace(t *testing.T) {
	const hostBase = 100000
	maps := []specs.LinuxIDMapping{{ContainerID: 0, HostID: hostBase, Size: 65536}}
	src := memSource{"id-a": secretData("a", 10), "id-b": secretData("b", 20)}
	grants := []mounter.Grant{
		{SecretID: "id-a", SecretName: "a", UID: "1000", GID: "1000", Mode: 0o400},
		{SecretID: "id-b", SecretName: "b", Target: "/etc/b", GID: "1000", Mode: 0o440},
	}
	// A user-namespaced container gets its mountpoints from the runtime
	// (claim.NeedsMountpoints), as the adapters add them.
	mp := testMountpointSource(t)
	_, m := buildWith(t, grants, src, mp)
	r, _, id, pid := runContainer(t, busybox.Options{User: specs.User{UID: 1000, GID: 1000}, UIDMappings: maps, GIDMappings: maps,
		Mounts: mountpointMounts(mp, "/run/secrets/a", "/etc/b")})
	c := mounter.Container{ID: id, Pid: pid,
		UIDMappings: []mounter.IDMapping{{ContainerID: 0, HostID: hostBase, Size: 65536}},
		GIDMappings: []mounter.IDMapping{{ContainerID: 0, HostID: hostBase, Size: 65536}},
	}
	if err := m.Attach(context.Background(), c); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	got := execOK(t, r, id, "id -u; stat -c '%u:%g %a' /run/secrets/a /etc/b; cat /run/secrets/a /etc/b")
	want := "1000\n1000:1000 400\n0:1000 440\n" + string(src["id-a"]) + string(src["id-b"])
	if got != want {
		t.Errorf("container sees:\n%s\nwant:\n%s", got, want)
	}
	// From the host, the files belong to the mapped ids.
	st, err := os.Stat(filepath.Join("/proc", itoa(pid), "root/run/secrets/a"))
	if err != nil {
		t.Fatal(err)
	}
	if uid, gid := ownerOf(st); uid != hostBase+1000 || gid != hostBase+1000 {
		t.Errorf("host sees %d:%d, want %d:%d", uid, gid, hostBase+1000, hostBase+1000)
	}

	// An id outside the mappings is refused before anything is attached.
	_, m2 := build(t, []mounter.Grant{{SecretID: "id-a", SecretName: "a", UID: "70000"}}, src)
	var ue *UnmappedError
	if err := m2.Attach(context.Background(), c); !errors.As(err, &ue) || ue.Kind != "uid" || ue.ID != 70000 {
		t.Fatalf("Attach with an unmapped uid = %v", err)
	}
}

func TestAttachErrors(t *testing.T) {
	src := memSource{"id-a": secretData("a", 10)}
	// A pid that cannot exist: above the kernel's pid_max limit.
	const deadPid = 1 << 30
	tests := []struct {
		name string
		c    mounter.Container
		want string
	}{
		{"no such pid", mounter.Container{Pid: deadPid}, "open pid"},
		{"no rootfs and no pid", mounter.Container{}, "no container rootfs"},
		{"rootfs missing", mounter.Container{Rootfs: "/nonexistent/rootfs"}, "open container rootfs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, m := build(t, []mounter.Grant{{SecretID: "id-a", SecretName: "a"}}, src)
			err := m.Attach(context.Background(), tt.c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Attach = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	_, m := build(t, []mounter.Grant{{SecretID: "id-a", SecretName: "a"}}, src)
	m.Wipe()
	if err := m.Attach(context.Background(), mounter.Container{Rootfs: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "wiped") {
		t.Errorf("Attach after Wipe = %v", err)
	}
}

// TestAttachByPidWithRootfs names the root as the container sees it ("/"),
// as the agent does for a container that has already pivoted.
func TestAttachByPidWithRootfs(t *testing.T) {
	src := memSource{"id-a": secretData("a", 10)}
	_, m := build(t, []mounter.Grant{{SecretID: "id-a", SecretName: "a"}}, src)
	r, _, id, pid := runContainer(t, busybox.Options{})
	if err := m.Attach(context.Background(), mounter.Container{ID: id, Pid: pid, Rootfs: "/"}); err != nil {
		t.Fatal(err)
	}
	if got := execOK(t, r, id, "cat /run/secrets/a"); got != string(src["id-a"]) {
		t.Errorf("container reads %q", got)
	}
}

// TestAttachUmask checks that the directories made in the container's root
// are traversable by its users whatever the mounter's umask.
func TestAttachUmask(t *testing.T) {
	src := memSource{"id-a": secretData("a", 10)}
	_, m := build(t, []mounter.Grant{{SecretID: "id-a", SecretName: "a", Target: "/opt/app/conf/a", UID: "1000"}}, src)
	r, _, id, pid := runContainer(t, busybox.Options{User: specs.User{UID: 1000, GID: 1000}})
	old := unix.Umask(0o077)
	defer unix.Umask(old)
	if err := m.Attach(context.Background(), mounter.Container{ID: id, Pid: pid}); err != nil {
		t.Fatal(err)
	}
	if got := execOK(t, r, id, "stat -c %a /opt /opt/app /opt/app/conf; cat /opt/app/conf/a"); got != "755\n755\n755\n"+string(src["id-a"]) {
		t.Errorf("container sees %q", got)
	}
}

// TestWipeAfterContainerStops is the normal end of a container: it stops,
// the agent wipes; the memory returns and no fd is left.
func TestWipeAfterContainerStops(t *testing.T) {
	const n, size = 20, mounter.MaxSecretSize - 1
	src := memSource{}
	var grants []mounter.Grant
	for i := range n {
		id := fmt.Sprintf("stop%02d", i)
		src[id] = secretData(id, size)
		grants = append(grants, mounter.Grant{SecretID: id, SecretName: id})
	}
	grants[0].Target = "/etc/outside"
	fds := openFDs(t)
	_, m := build(t, grants, src)
	r, _, id, pid := runContainer(t, busybox.Options{})
	if err := m.Attach(context.Background(), mounter.Container{ID: id, Pid: pid}); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(busybox.Context(t), id); err != nil {
		t.Fatal(err)
	}
	before := shmemKiB(t)
	if err := m.Wipe(); err != nil {
		t.Fatal(err)
	}
	after := shmemKiB(t)
	if drop, payload := before-after, int64(n*size/1024); drop < payload*8/10 {
		t.Errorf("Shmem dropped by %d KiB after wiping %d KiB", drop, payload)
	}
	if got := openFDs(t); len(got) != len(fds) {
		t.Errorf("fds after the wipe: %v, before the build: %v", got, fds)
	}
}
