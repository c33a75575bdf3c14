//go:build linux

package linux

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/mounter"
)

// TestRecover plays an agent killed with -9 while a container runs: the
// agent's mount fd is gone, the container still reads its secrets; a new
// agent recovers the mounts from the container and wipes them when it
// stops: the memory returns at once, the container sees empty files.
func TestRecover(t *testing.T) {
	const n, size = 20, mounter.MaxSecretSize - 1
	src := memSource{}
	var grants []mounter.Grant
	for i := range n {
		id := fmt.Sprintf("rec%02d", i)
		src[id] = secretData(id, size)
		g := mounter.Grant{SecretID: id, SecretName: id}
		switch i {
		case 0:
			g.Target = "/etc/outside"
		case 1:
			g.Target = "conf/nested"
		}
		grants = append(grants, g)
	}
	r, _, id, pid := runContainer(t, busybox.Options{})
	plan, m := buildOwned(t, grants, src, id)
	ctx := context.Background()
	if err := m.Attach(ctx, mounter.Container{ID: id, Pid: pid}); err != nil {
		t.Fatal(err)
	}

	// The agent dies: its fd closes without a wipe.
	unix.Close(m.fd)
	m.fd, m.wiped = -1, true
	if got := execOK(t, r, id, "md5sum < /etc/outside; md5sum < /run/secrets/conf/nested"); got != md5sum(src["rec00"])+"  -\n"+md5sum(src["rec01"])+"  -\n" {
		t.Fatalf("the container lost its secrets with the agent: %q", got)
	}

	// A target that was never attached is skipped.
	plan.Files = append(plan.Files, mounter.File{SecretID: "x", SecretName: "x", Name: "x", Target: "/opt/never", Mode: 0o444, Size: 1})
	fds := openFDs(t)
	if _, err := New().Recover(ctx, mounter.Container{Pid: pid}, plan); err == nil {
		t.Fatal("Recover without a container ID succeeded")
	}
	rec, err := New().Recover(ctx, mounter.Container{ID: id, Pid: pid}, plan)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if len(rec.clones) != n {
		t.Fatalf("recovered %d mounts, want %d (one per attached target)", len(rec.clones), n)
	}
	if _, err := rec.Handover(mounter.Container{}); err == nil {
		t.Error("Handover of a recovered mount succeeded")
	}

	before := shmemKiB(t)
	if err := rec.Wipe(); err != nil {
		t.Fatalf("Wipe: %v", err)
	}
	after := shmemKiB(t)
	payload := int64(n * size / 1024)
	if drop := before - after; drop < payload*8/10 {
		t.Errorf("Shmem dropped by %d KiB after wiping %d KiB", drop, payload)
	}
	if got := execOK(t, r, id, "stat -c %s /run/secrets/rec05 /run/secrets/conf/nested /etc/outside"); got != "0\n0\n0\n" {
		t.Errorf("after the wipe the container sees %q", got)
	}
	if after := openFDs(t); len(after) != len(fds) {
		t.Errorf("fds after the wipe: %v, before Recover: %v", after, fds)
	}
	if err := rec.Wipe(); err != nil {
		t.Errorf("second Wipe: %v", err)
	}
}

// TestRecoverLeavesOthersAlone checks that mounts that are not ours are not
// taken: a writable tmpfs the container has at /run/secrets, and a
// read-only nosuid,nodev,noexec one (the same shape as ours, no mark).
func TestRecoverLeavesOthersAlone(t *testing.T) {
	plan, err := mounter.NewPlan(mounter.Linux, []mounter.Grant{{SecretID: "a", SecretName: "a", Size: 1}})
	if err != nil {
		t.Fatal(err)
	}
	o := busybox.Options{Args: []string{"sh", "-c", "echo keep > /run/secrets/own; exec sleep 3600"}}
	ro := busyboxTmpfs("/etc/ro")
	ro.Options = append(ro.Options, "ro")
	o.Mounts = append(o.Mounts, busyboxTmpfs("/run/secrets"), ro)
	plan.Files = append(plan.Files, mounter.File{SecretID: "b", SecretName: "b", Name: "b", Target: "/etc/ro", Mode: 0o444, Size: 1})
	r, _, id, pid := runContainer(t, o)
	rec, err := New().Recover(context.Background(), mounter.Container{ID: id, Pid: pid}, plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.clones) != 0 {
		t.Errorf("recovered %d mounts from a container with none of ours", len(rec.clones))
	}
	rec.Wipe()
	if got := execOK(t, r, id, "cat /run/secrets/own"); strings.TrimSpace(got) != "keep" {
		t.Errorf("the container's own file reads %q", got)
	}
}

// buildOwned is build for the container owner: what the agent builds.
func buildOwned(t testing.TB, grants []mounter.Grant, src memSource, owner string) (*mounter.Plan, *Mount) {
	t.Helper()
	for i := range grants {
		grants[i].Size = int64(len(src[grants[i].SecretID]))
	}
	plan, err := mounter.NewPlan(mounter.Linux, grants)
	if err != nil {
		t.Fatalf("NewPlan: %v", err)
	}
	plan.Owner = owner
	m, err := New().BuildTmpfs(context.Background(), plan, src)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Cleanup(func() { m.Wipe() })
	return plan, m
}

// remark replaces the mark of a built mount's file name (the secrets/
// directory or a single file's name) with value, as an older agent or a
// build for another container would have left it.
func remark(t *testing.T, m *Mount, name string, value []byte) {
	t.Helper()
	if err := m.setWritable(true); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.setWritable(false); err != nil {
			t.Fatal(err)
		}
	}()
	fd, err := unix.Openat(m.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Fsetxattr(fd, markXattr, value, 0); err != nil {
		t.Fatal(err)
	}
}

// TestRecoverTakesOnlyItsContainers: the namespace Recover enters may not
// be its container's (namespace inodes are reused), so only mounts whose
// mark names the container are taken. Each case is one single-file mount
// in the same running container; only the last is marked for it.
func TestRecoverTakesOnlyItsContainers(t *testing.T) {
	r, _, id, pid := runContainer(t, busybox.Options{})
	cases := []struct {
		name string
		mark []byte
		ours bool
	}{
		{"another container", markFor("web-2"), false},
		{"an agent that wrote no ID", []byte("1"), false},
		{"a prefix of the ID", markFor(id[:len(id)-1]), false},
		{"the ID and more", markFor(id + "x"), false},
		{"the ID without the prefix", []byte(id), false},
		{"no owner", markFor(""), false},
		{"this container", markFor(id), true},
	}
	plan := &mounter.Plan{OS: mounter.Linux}
	var mounts []*Mount
	for i, tc := range cases {
		sid := fmt.Sprintf("case%d", i)
		src := memSource{sid: []byte("secret of case " + itoa(i))}
		p, m := buildOwned(t, []mounter.Grant{{SecretID: sid, SecretName: sid, Target: "/etc/" + sid}}, src, id)
		remark(t, m, p.Files[0].Name, tc.mark)
		if err := m.Attach(context.Background(), mounter.Container{ID: id, Pid: pid}); err != nil {
			t.Fatal(err)
		}
		plan.Files = append(plan.Files, p.Files[0])
		mounts = append(mounts, m)
	}
	// The agent dies: its fds close without a wipe.
	for _, m := range mounts {
		unix.Close(m.fd)
		m.fd, m.wiped = -1, true
	}
	rec, err := New().Recover(context.Background(), mounter.Container{ID: id, Pid: pid}, plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.clones) != 1 {
		t.Fatalf("recovered %d mounts, want 1", len(rec.clones))
	}
	if err := rec.Wipe(); err != nil {
		t.Fatal(err)
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := execOK(t, r, id, fmt.Sprintf("cat /etc/case%d", i))
			want := "secret of case " + itoa(i)
			if tc.ours {
				want = ""
			}
			if got != want {
				t.Errorf("after the wipe /etc/case%d reads %q, want %q", i, got, want)
			}
		})
	}
}
