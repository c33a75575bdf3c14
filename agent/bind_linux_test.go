package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/agent/errdefs"
	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/linux"
	"github.com/lockbox-project/lockbox/mounter"
)

// prepareBeforeCreate asks a as the runtime shim does beside runc's
// create, and returns the handed-over mounts.
func prepareBeforeCreate(t *testing.T, a *Agent, id string) []mounter.Handover {
	t.Helper()
	resp, files, err := a.Prepare(context.Background(), &api.PrepareRequest{BeforeCreate: true, Container: &api.Container{Id: id, Service: "web"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeFiles(files) })
	var hs []mounter.Handover
	for _, m := range resp.GetMounts() {
		i, ok, err := m.Fd(len(files))
		if err != nil || !ok {
			t.Fatalf("mount %v without its fd: %v", m, err)
		}
		hs = append(hs, mounter.Handover{Target: m.GetTarget(), File: files[i]})
	}
	if len(hs) != 2 {
		t.Fatalf("%d mounts handed over, want web's 2", len(hs))
	}
	return hs
}

// The runtime shim's claim: the agent builds and hands over before the
// container exists, the shim attaches into the container runc created,
// and the bind names its process. From the bind on, the container is the
// agent's like any other: recorded with its process, watched, and wiped
// within a second of its exit.
func TestBindAfterCreate(t *testing.T) {
	state := t.TempDir()
	a := newAgent(t, state, newCache(t))
	t.Cleanup(a.Close)
	ctx := context.Background()
	hs := prepareBeforeCreate(t, a, "c1")
	// No record until the bind: one with no process would tell a
	// restarted agent nothing.
	if _, err := os.Stat(filepath.Join(state, "containers", "c1.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("record before the bind: %v", err)
	}
	// Another create of the ID meanwhile (another containerd namespace)
	// does not share the tmpfs.
	if _, _, err := a.Prepare(ctx, &api.PrepareRequest{BeforeCreate: true, Container: &api.Container{Id: "c1", Service: "web"}}); errdefs.KindOf(err) != errdefs.Invalid || !strings.Contains(err.Error(), "being created") {
		t.Fatalf("second before-create prepare of c1: %v, want refused", err)
	}
	if n := a.exits.watching(); n != 0 {
		t.Fatalf("watching %d processes before the create", n)
	}
	// Nothing to judge it by: the periodic reap leaves it alone.
	if n := a.Reap(ctx); n != 0 {
		t.Fatalf("reap took %d containers mid-create", n)
	}

	r := busybox.NewRunc(t)
	pid := runContainer(t, r, "c1")
	if err := linux.AttachHandoversInto(pid, hs); err != nil {
		t.Fatal(err)
	}
	// As the shim does: the container's mount namespace holds them now.
	for _, h := range hs {
		h.File.Close()
	}
	if got, err := catIn(t, r, "c1", "/run/secrets/db_pw"); err != nil || got != "hunter2" {
		t.Fatalf("cat db_pw in container: %q, %v", got, err)
	}
	if err := a.Bind(ctx, &api.BindRequest{ContainerId: "c1", Pid: int32(pid)}); err != nil {
		t.Fatal(err)
	}
	start, err := pidStart(pid)
	if err != nil {
		t.Fatal(err)
	}
	if rec := readRecord(t, state, "c1"); rec.Pid != pid || rec.PidStart != start || rec.MntNS == 0 || rec.PreStartExe == "" {
		t.Fatalf("record after the bind %+v, want pid %d started at %d", rec, pid, start)
	}
	if n := a.exits.watching(); n != 1 {
		t.Fatalf("watching %d processes after the bind, want 1", n)
	}
	// The same bind again is answered yes.
	if err := a.Bind(ctx, &api.BindRequest{ContainerId: "c1", Pid: int32(pid)}); err != nil {
		t.Errorf("second bind: %v", err)
	}
	// A container reusing the ID while this one runs is refused.
	if _, _, err := a.Prepare(ctx, &api.PrepareRequest{BeforeCreate: true, Container: &api.Container{Id: "c1", Service: "web"}}); errdefs.KindOf(err) != errdefs.Invalid || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("prepare of the running container's ID: %v, want in use", err)
	}

	dev := secretsDev(t, pid)
	kill := time.Now()
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took := waitReleased(t, a, "c1", kill, wipeDeadline)
	t.Logf("wiped %v after the kill", took)
	if fds := fdsOn(dev); len(fds) != 0 {
		t.Errorf("fds %v still open on the tmpfs after the exit", fds)
	}
	if _, err := os.Stat(filepath.Join(state, "containers", "c1.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record kept after the exit: %v", err)
	}
	if got := a.ReleaseCounts(); got != (ReleaseCounts{Exit: 1}) {
		t.Errorf("release counts %+v, want one exit", got)
	}
}

// What a bind cannot do: bind an ID the agent does not hold, bind a
// process that is no container's (the agent's own mount namespace: the
// host's), bind a process that has ended, or move a container bound to one
// process to another.
func TestBindRefusals(t *testing.T) {
	state := t.TempDir()
	a := newAgent(t, state, newCache(t))
	t.Cleanup(a.Close)
	ctx := context.Background()
	r := busybox.NewRunc(t)
	other := runContainer(t, r, "other")

	prepareBeforeCreate(t, a, "held")
	pid := runContainer(t, r, "bound")
	prepareBeforeCreate(t, a, "bound")
	if err := a.Bind(ctx, &api.BindRequest{ContainerId: "bound", Pid: int32(pid)}); err != nil {
		t.Fatal(err)
	}
	ended, stop := startSleeper(t)
	endedPid := ended.Process.Pid
	stop()

	for _, tc := range []struct {
		name string
		req  *api.BindRequest
		kind errdefs.Kind
		want string
	}{
		{"not held", &api.BindRequest{ContainerId: "nobody", Pid: int32(other)}, errdefs.NotFound, "holds no secrets"},
		{"bad ID", &api.BindRequest{ContainerId: "../x", Pid: int32(other)}, errdefs.Invalid, "not a container ID"},
		{"the agent's own namespace", &api.BindRequest{ContainerId: "held", Pid: int32(os.Getpid())}, errdefs.Invalid, "no container's process"},
		{"an ended process", &api.BindRequest{ContainerId: "held", Pid: int32(endedPid)}, errdefs.Invalid, "not a running process"},
		{"bound to another process", &api.BindRequest{ContainerId: "bound", Pid: int32(other)}, errdefs.Invalid, "held for another process"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := a.Bind(ctx, tc.req)
			if errdefs.KindOf(err) != tc.kind || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("bind %v: %v, want %v with %q", tc.req, err, tc.kind, tc.want)
			}
		})
	}
	// Nothing above changed what the agent holds.
	if _, err := os.Stat(filepath.Join(state, "containers", "held.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused binds recorded held: %v", err)
	}
	if rec := readRecord(t, state, "bound"); rec.Pid != pid {
		t.Errorf("refused binds moved bound to %d", rec.Pid)
	}
}

// A shim that dies between its before-create Prepare and its bind leaves
// the container held with no process: the release its manager's Stop sends
// from the claim record, naming nothing, wipes it.
func TestUnboundReleasedByTheRecordsRelease(t *testing.T) {
	state := t.TempDir()
	a := newAgent(t, state, newCache(t))
	t.Cleanup(a.Close)
	prepareBeforeCreate(t, a, "c1")
	if err := a.ReleaseRequest(context.Background(), &api.ReleaseRequest{ContainerId: "c1"}); err != nil {
		t.Fatal(err)
	}
	if list, _ := a.List(context.Background()); len(list.GetContainers()) != 0 {
		t.Fatalf("still held after the release: %v", list)
	}
	if _, err := os.Stat(filepath.Join(state, "containers", "c1.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record kept after the release: %v", err)
	}
}
