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
	plan, m := build(t, grants, src)
	r, _, id, pid := runContainer(t, busybox.Options{})
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
	rec, err := New().Recover(ctx, mounter.Container{ID: id, Pid: pid}, plan)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if len(rec.clones) != 2 {
		t.Fatalf("recovered %d mounts, want 2 (/run/secrets and /etc/outside)", len(rec.clones))
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
	if got := execOK(t, r, id, "ls -A /run/secrets | wc -l; stat -c %s /etc/outside"); got != "0\n0\n" {
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
