package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/agent/grants"
	"github.com/lockbox-project/lockbox/agent/localapi"
	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/linux"
)

func testLog(testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newCache returns a cache holding service web with db_pw (default target)
// and api_key (target cfg/key, uid 1000, mode 0400), on node node-7.
func newCache(t *testing.T) *grants.Cache {
	t.Helper()
	c := grants.NewCache()
	t.Cleanup(c.Close)
	sec := func(id, name, data string) *dispatcher.AssignmentChange {
		return &dispatcher.AssignmentChange{Assignment: &dispatcher.Assignment{Item: &dispatcher.Assignment_Secret{
			Secret: &dispatcher.SecretData{Id: id, Name: name, Data: []byte(data)}}}}
	}
	svc := &dispatcher.AssignmentChange{Assignment: &dispatcher.Assignment{Item: &dispatcher.Assignment_Service{Service: &dispatcher.ServiceGrants{
		ServiceId: "svc1", ServiceName: "web", Grants: []*dispatcher.Grant{
			{SecretId: "s1", SecretName: "db_pw"},
			{SecretId: "s2", SecretName: "api_key", Target: &types.FileTarget{Name: "cfg/key", Uid: "1000", Gid: "1000", Mode: 0o400}},
		}}}}}
	msg := &dispatcher.SessionMessage{Type: dispatcher.SessionMessage_COMPLETE, Revision: 1, NodeId: "node-7",
		Changes: []*dispatcher.AssignmentChange{sec("s1", "db_pw", "hunter2"), sec("s2", "api_key", "k-123"), svc}}
	if err := c.Apply(msg); err != nil {
		t.Fatal(err)
	}
	return c
}

func newAgent(t *testing.T, stateDir string, c *grants.Cache) *Agent {
	t.Helper()
	a, err := New(Config{StateDir: stateDir, Grants: c, Mounter: linux.New(), Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func runContainer(t *testing.T, r *busybox.Runc, id string) int {
	t.Helper()
	b, err := busybox.NewBundle(filepath.Join(t.TempDir(), id), busybox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := busybox.Context(t)
	if err := r.Run(ctx, id, b); err != nil {
		t.Fatal(err)
	}
	pid, err := r.Pid(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func catIn(t *testing.T, r *busybox.Runc, id, path string) (string, error) {
	t.Helper()
	out, stderr, err := r.Exec(busybox.Context(t), id, "cat", path)
	if err != nil {
		return "", errors.New(strings.TrimSpace(stderr))
	}
	return out, nil
}

func TestPrepareAttachReleaseInRunc(t *testing.T) {
	state := t.TempDir()
	a := newAgent(t, state, newCache(t))
	r := busybox.NewRunc(t)
	pid := runContainer(t, r, "c1")
	ctx := context.Background()

	resp, files, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "c1", Service: "web", Pid: int32(pid)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 0 || len(resp.GetMounts()) != 2 {
		t.Fatalf("resp %v files %d", resp, len(files))
	}
	if got, err := catIn(t, r, "c1", "/run/secrets/db_pw"); err != nil || got != "hunter2" {
		t.Errorf("cat db_pw in container: %q, %v", got, err)
	}
	// The container's root has no CAP_DAC_OVERRIDE, so the 0400 file of
	// uid 1000 is closed to it; read it from the host through /proc.
	if got, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/run/secrets/cfg/key", pid)); err != nil || string(got) != "k-123" {
		t.Errorf("read cfg/key through /proc/<pid>/root: %q, %v", got, err)
	}
	if _, err := catIn(t, r, "c1", "/run/secrets/cfg/key"); err == nil {
		t.Error("container root read a 0400 file of uid 1000")
	}
	out, _, err := r.Exec(busybox.Context(t), "c1", "stat", "-c", "%u:%g %a", "/run/secrets/cfg/key")
	if err != nil || strings.TrimSpace(out) != "1000:1000 400" {
		t.Errorf("owner and mode of cfg/key: %q %v", out, err)
	}
	if _, err := os.Stat(filepath.Join(state, "containers", "c1.json")); err != nil {
		t.Errorf("no record: %v", err)
	}
	rec, _ := os.ReadFile(filepath.Join(state, "containers", "c1.json"))
	if strings.Contains(string(rec), "hunter2") {
		t.Error("record holds secret data")
	}

	// A second prepare is idempotent.
	if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "c1", Service: "web", Pid: int32(pid)}}); err != nil {
		t.Errorf("second prepare: %v", err)
	}
	list, _ := a.List(ctx)
	if len(list.GetContainers()) != 1 || list.GetContainers()[0].GetService() != "web" || len(list.GetContainers()[0].GetTargets()) != 2 {
		t.Errorf("list %v", list)
	}

	// The container still runs: its release names its process, as
	// lockbox-runtime's does (a release naming nothing waits for it to end).
	if err := a.ReleaseRequest(ctx, &api.ReleaseRequest{ContainerId: "c1", Pid: int32(pid)}); err != nil {
		t.Fatal(err)
	}
	// Wiped: the files are gone from the container's view.
	if got, err := catIn(t, r, "c1", "/run/secrets/db_pw"); err == nil && got == "hunter2" {
		t.Error("secret still readable after release")
	}
	if _, err := os.Stat(filepath.Join(state, "containers", "c1.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record left after release: %v", err)
	}
	if err := a.Release(ctx, "c1"); err != nil {
		t.Errorf("second release: %v", err)
	}
	if list, _ := a.List(ctx); len(list.GetContainers()) != 0 {
		t.Errorf("list after release: %v", list)
	}
}

func TestPrepareErrors(t *testing.T) {
	a := newAgent(t, t.TempDir(), newCache(t))
	ctx := context.Background()
	tests := []struct {
		name    string
		req     *api.PrepareRequest
		code    api.Error_Code
		message string
	}{
		{"not granted names service and node", &api.PrepareRequest{Container: &api.Container{Id: "x1", Service: "billing", Rootfs: "/"}},
			api.Error_NOT_GRANTED, `service "billing" has no grant on node node-7`},
		{"bad id", &api.PrepareRequest{Container: &api.Container{Id: "../etc", Service: "web"}}, api.Error_INVALID, "not a container ID"},
		{"no service", &api.PrepareRequest{Container: &api.Container{Id: "x2"}}, api.Error_INVALID, "claims no service"},
		{"bad os", &api.PrepareRequest{Container: &api.Container{Id: "x3", Service: "web", Os: "plan9"}}, api.Error_INVALID, "plan9"},
		{"windows rejects uid", &api.PrepareRequest{Container: &api.Container{Id: "x4", Service: "web", Os: "windows"}}, api.Error_INVALID, "api_key"},
		{"pid of no process", &api.PrepareRequest{Container: &api.Container{Id: "x5", Service: "web", Pid: 1<<31 - 1}}, api.Error_INVALID, "not a running process"},
		{"pid of no process, attach", &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "x6", Service: "web", Pid: 1<<31 - 1}}, api.Error_INVALID, "not a running process"},
		{"negative pid", &api.PrepareRequest{Container: &api.Container{Id: "x7", Service: "web", Pid: -4}}, api.Error_INVALID, "not a process"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, files, err := a.Prepare(ctx, tt.req)
			// As the local API reports it (its one mapping of the
			// agent's domain errors).
			e := localapi.WireError(err)
			if err == nil || e.Code != tt.code || !strings.Contains(e.Message, tt.message) {
				t.Fatalf("got %v (files %v), want %v containing %q", err, files, tt.code, tt.message)
			}
		})
	}
	if list, _ := a.List(ctx); len(list.GetContainers()) != 0 {
		t.Errorf("failed prepares left %v", list)
	}
}

// TestHandoverOverSocket sends the mount fd through the real local API and
// reads the secret through the received fd.
func TestHandoverOverSocket(t *testing.T) {
	a := newAgent(t, t.TempDir(), newCache(t))
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := localapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := localapi.NewServer(a, testLog(t))
	go srv.Serve(ln)
	defer srv.Close()

	c, err := localapi.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, files, err := c.Prepare(ctx, &api.PrepareRequest{Container: &api.Container{Id: "h1", Service: "web", Rootfs: "/nonexistent"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	// One single-file mount per target.
	if len(files) != 2 || resp.GetMounts()[0].GetTarget() != "/run/secrets/db_pw" || resp.GetMounts()[1].GetTarget() != "/run/secrets/cfg/key" {
		t.Fatalf("resp %v, %d files", resp, len(files))
	}
	i, _, err := resp.GetMounts()[0].Fd(len(files))
	if err != nil {
		t.Fatal(err)
	}
	// The mount's root is the file: reach it through /proc.
	dbpw := fmt.Sprintf("/proc/self/fd/%d", files[i].Fd())
	got, err := os.ReadFile(dbpw)
	if err != nil || string(got) != "hunter2" {
		t.Errorf("read through handed-over fd: %q %v", got, err)
	}
	// The handed-over mount is read-only.
	if fd, err := unix.Open(dbpw, unix.O_WRONLY, 0); err == nil {
		unix.Close(fd)
		t.Error("handed-over mount is writable")
	}
	if err := c.Release(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(dbpw); err != nil || len(got) != 0 {
		t.Errorf("through the fd after release: %q (%v), want an empty file", got, err)
	}
}

// TestRecoverAfterCrash: an agent that dies with containers mounted leaves
// records; the next one forgets finished containers and keeps running ones.
func TestRecoverAfterCrash(t *testing.T) {
	state := t.TempDir()
	r := busybox.NewRunc(t)
	ctx := context.Background()
	first := newAgent(t, state, newCache(t))
	for _, id := range []string{"live", "gone"} {
		pid := runContainer(t, r, id)
		if _, _, err := first.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: id, Service: "web", Pid: int32(pid)}}); err != nil {
			t.Fatal(err)
		}
	}
	// The first agent goes away without releasing anything.
	first.Close()
	if err := r.Delete(busybox.Context(t), "gone"); err != nil {
		t.Fatal(err)
	}

	second := newAgent(t, state, newCache(t))
	list, _ := second.List(ctx)
	if len(list.GetContainers()) != 1 || list.GetContainers()[0].GetId() != "live" {
		t.Fatalf("after restart: %v", list)
	}
	if _, err := os.Stat(filepath.Join(state, "containers", "gone.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record of the finished container kept: %v", err)
	}
	if got, err := catIn(t, r, "live", "/run/secrets/db_pw"); err != nil || got != "hunter2" {
		t.Errorf("running container lost its secret: %q %v", got, err)
	}
	livePid, err := r.Pid(busybox.Context(t), "live")
	if err != nil {
		t.Fatal(err)
	}
	if err := second.ReleaseRequest(ctx, &api.ReleaseRequest{ContainerId: "live", Pid: int32(livePid)}); err != nil {
		t.Fatal(err)
	}
	// The restarted agent took the mount back, so the release wiped it.
	if got, err := catIn(t, r, "live", "/run/secrets/db_pw"); err == nil && got == "hunter2" {
		t.Error("secret of a recovered container still readable after release")
	}
	if list, _ := second.List(ctx); len(list.GetContainers()) != 0 {
		t.Errorf("after release: %v", list)
	}
}

func TestContainerIDs(t *testing.T) {
	for id, ok := range map[string]bool{
		"abc": true, "a-b_c.d": true, strings.Repeat("f", 64): true, strings.Repeat("f", 77): false,
		"": false, ".": false, "..": false, "a/b": false, "-a": false, "a-": false, "a..b": false,
	} {
		if validContainerID(id) != ok {
			t.Errorf("validContainerID(%q) = %v", id, !ok)
		}
	}
}

func FuzzContainerID(f *testing.F) {
	f.Add("abc")
	f.Add("../x")
	f.Fuzz(func(t *testing.T, id string) {
		if validContainerID(id) && (strings.ContainsAny(id, "/\x00") || id == "." || id == ".." || strings.HasPrefix(id, ".")) {
			t.Errorf("%q accepted", id)
		}
	})
}

// TestConcurrentPrepareRelease races prepares and releases of distinct and
// shared container IDs while grants change underneath.
func TestConcurrentPrepareRelease(t *testing.T) {
	c := newCache(t)
	a := newAgent(t, t.TempDir(), c)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				id := fmt.Sprintf("g%d-%d", g, i)
				if i%5 == 0 {
					id = "shared"
				}
				_, files, err := a.Prepare(ctx, &api.PrepareRequest{Container: &api.Container{Id: id, Service: "web", Rootfs: "/nonexistent"}})
				for _, f := range files {
					f.Close()
				}
				// A grant may leave while its mount is being built: that
				// build fails rather than serve zeroed bytes.
				if err != nil && !errors.Is(err, grants.ErrNotDelivered) {
					t.Errorf("prepare %s: %v", id, err)
				}
				if err := a.Release(ctx, id); err != nil {
					t.Errorf("release %s: %v", id, err)
				}
			}
		}()
	}
	// Meanwhile api_key leaves web and comes back, again and again.
	for rev := uint64(2); rev < 40; rev++ {
		gs := []*dispatcher.Grant{{SecretId: "s1", SecretName: "db_pw"}}
		changes := []*dispatcher.AssignmentChange{}
		if rev%2 == 0 {
			gs = append(gs, &dispatcher.Grant{SecretId: "s2", SecretName: "api_key", Target: &types.FileTarget{Name: "cfg/key"}})
			changes = append(changes, &dispatcher.AssignmentChange{Assignment: &dispatcher.Assignment{Item: &dispatcher.Assignment_Secret{
				Secret: &dispatcher.SecretData{Id: "s2", Name: "api_key", Data: []byte("k-123")}}}})
		}
		changes = append(changes, &dispatcher.AssignmentChange{Assignment: &dispatcher.Assignment{Item: &dispatcher.Assignment_Service{
			Service: &dispatcher.ServiceGrants{ServiceId: "svc1", ServiceName: "web", Grants: gs}}}})
		if err := c.Apply(&dispatcher.SessionMessage{Type: dispatcher.SessionMessage_INCREMENTAL, Revision: rev, Changes: changes}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if list, _ := a.List(ctx); len(list.GetContainers()) != 0 {
		t.Errorf("left after all releases: %v", list)
	}
	ents, _ := os.ReadDir(filepath.Join(a.records.dir))
	if len(ents) != 0 {
		t.Errorf("records left: %d", len(ents))
	}
}

// TestReap: a container that ends without a Release (its runtime's delete
// lost) is wiped and forgotten by Reap; a running one is left alone.
func TestReap(t *testing.T) {
	state := t.TempDir()
	a := newAgent(t, state, newCache(t))
	// Reap is the net for exits the watch misses: here it misses them all.
	a.stopExitWatch()
	r := busybox.NewRunc(t)
	ctx := context.Background()
	for _, id := range []string{"running", "ended"} {
		pid := runContainer(t, r, id)
		if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: id, Service: "web", Pid: int32(pid)}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.Reap(ctx); n != 0 {
		t.Fatalf("reaped %d while both containers run", n)
	}
	if err := r.Delete(busybox.Context(t), "ended"); err != nil {
		t.Fatal(err)
	}
	if n := a.Reap(ctx); n != 1 {
		t.Fatalf("reaped %d, want 1", n)
	}
	list, _ := a.List(ctx)
	if len(list.GetContainers()) != 1 || list.GetContainers()[0].GetId() != "running" {
		t.Fatalf("after reap: %v", list)
	}
	if _, err := os.Stat(filepath.Join(state, "containers", "ended.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record of the reaped container kept: %v", err)
	}
	if got, err := catIn(t, r, "running", "/run/secrets/db_pw"); err != nil || got != "hunter2" {
		t.Errorf("running container lost its secret: %q %v", got, err)
	}
	if got := a.ReleaseCounts(); got != (ReleaseCounts{Reap: 1}) {
		t.Errorf("release counts %+v, want one reap", got)
	}
}

// The record is written beside the attach: a record that cannot be
// written fails the Prepare after the attach, and the secrets it attached
// are wiped before the answer (the caller then kills the container; its
// files must not outlive the failure either way), with nothing held or
// recorded.
func TestPrepareRecordFailureWipesTheAttach(t *testing.T) {
	state := t.TempDir()
	a := newAgent(t, state, newCache(t))
	r := busybox.NewRunc(t)
	pid := runContainer(t, r, "c1")
	// A non-empty directory where the record goes: the rename over it
	// fails, for root as for anyone.
	blocker := filepath.Join(state, "containers", "c1.json")
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, _, err := a.Prepare(context.Background(), &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "c1", Service: "web", Pid: int32(pid)}})
	if err == nil || !strings.Contains(err.Error(), "record container c1") {
		t.Fatalf("Prepare with an unwritable record: %v, want the record's error", err)
	}
	if got, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", pid)); err == nil && strings.Contains(string(got), "hunter2") {
		t.Error("secret readable in the container after the failed Prepare")
	}
	if list, _ := a.List(context.Background()); len(list.GetContainers()) != 0 {
		t.Errorf("agent holds %v after the failed Prepare", list)
	}
	if fi, err := os.Stat(blocker); err != nil || !fi.IsDir() {
		t.Errorf("record path after the failed Prepare: %v, %v", fi, err)
	}
}

// A root caller that names a host process for the agent to attach in (here
// the test itself, whose root is the agent's) gets nothing: the agent
// refuses a process whose root is its own, and the host's /run/secrets is
// left as it was. The shim's attach goes through the same check
// (linux.AttachHandoversInto).
func TestAttachRefusesAHostProcess(t *testing.T) {
	const target = "/run/secrets/db_pw"
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the host has %s before the test: %v", target, err)
	}
	state := t.TempDir()
	a := newAgent(t, state, newCache(t))
	t.Cleanup(a.Close)
	_, files, err := a.Prepare(context.Background(), &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "host", Service: "web", Pid: int32(os.Getpid())}})
	closeFiles(files)
	if err == nil || !strings.Contains(err.Error(), "no container's process") {
		t.Fatalf("attach into the agent's own root: %v, want refused", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the host has %s after the refused attach: %v", target, err)
	}
	if list, _ := a.List(context.Background()); len(list.GetContainers()) != 0 {
		t.Errorf("held after the refused attach: %v", list)
	}
	if _, err := os.Stat(filepath.Join(state, "containers", "host.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record kept after the refused attach: %v", err)
	}
}
