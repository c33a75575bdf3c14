package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lockbox-project/lockbox/agent/localapi"
	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/linux"
	"github.com/lockbox-project/lockbox/mounter"
	"github.com/lockbox-project/lockbox/plugin/runtime/hotpath"
)

// hookEnv makes the test binary an OCI createContainer hook (plugin/runtime/hotpath,
// as lockbox-runtime runs it) talking to the agent socket it names;
// hookPidEnv, when set, replaces the pid of the OCI state it reads (a hook
// that lies about its container).
const (
	hookEnv    = "LOCKBOX_AGENT_TEST_HOOK"
	hookPidEnv = "LOCKBOX_AGENT_TEST_HOOK_PID"
)

func TestMain(m *testing.M) {
	if sock := os.Getenv(hookEnv); sock != "" {
		os.Exit(hookMain(sock))
	}
	if spec := os.Getenv(releaseFromEnv); spec != "" {
		os.Exit(releaseFromMain(spec))
	}
	os.Exit(m.Run())
}

func hookMain(sock string) int {
	var stdin io.Reader = os.Stdin
	if p := os.Getenv(hookPidEnv); p != "" {
		var st specs.State
		if err := json.NewDecoder(os.Stdin).Decode(&st); err != nil {
			fmt.Fprintln(os.Stderr, "hook:", err)
			return 1
		}
		st.Pid, _ = strconv.Atoi(p)
		b, _ := json.Marshal(st)
		stdin = strings.NewReader(string(b))
	}
	// The hook lockbox-runtime runs (cmd/lockbox-runtime/hook.go).
	h := &hotpath.Hook{
		Socket: sock,
		Dial:   hotpath.DialAgent,
		Attach: func(rootfs string, hs []hotpath.Handover) error {
			mhs := make([]mounter.Handover, len(hs))
			for i, h := range hs {
				mhs[i] = mounter.Handover{Target: h.Target, File: h.File}
			}
			return linux.AttachHandovers(rootfs, mhs)
		},
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "hook: no event")
		return 2
	}
	if err := h.Run(os.Args[1], stdin); err != nil {
		fmt.Fprintln(os.Stderr, "lockbox:", err)
		return 1
	}
	return 0
}

// serve serves a on a socket in a temp dir and returns its path.
func serve(t *testing.T, a *Agent) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := localapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := localapi.NewServer(a, testLog(t))
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// crunScript runs crun where this machine's hybrid cgroup layout does not
// stop it (see integration/harness/crun.go for why).
const crunScript = `#!/bin/sh
exec unshare --mount --propagation private -- /bin/sh -c '
if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified || exit 1; fi
exec "$0" "$@"' /usr/bin/crun "$@"
`

// runtimes are the OCI runtimes the hook tests run under: runc's hooks see
// the container's init as pid 1, crun's get pid 0.
func runtimes(t *testing.T) map[string]func(t *testing.T) (*busybox.Runc, string) {
	return map[string]func(t *testing.T) (*busybox.Runc, string){
		"runc": func(t *testing.T) (*busybox.Runc, string) { return busybox.NewRunc(t), specs.Version },
		"crun": func(t *testing.T) (*busybox.Runc, string) {
			p := filepath.Join(t.TempDir(), "crun")
			if err := os.WriteFile(p, []byte(crunScript), 0o755); err != nil {
				t.Fatal(err)
			}
			r := busybox.NewRunc(t)
			r.Binary = p
			// crun 1.8.1 refuses an ociVersion past 1.1.x.
			return r, "1.1.0"
		},
	}
}

// hookedBundle is a busybox bundle claiming service web, whose
// createContainer hook is this test binary talking to sock.
func hookedBundle(t *testing.T, sock, version string, env ...string) *busybox.Bundle {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := busybox.NewBundle(filepath.Join(t.TempDir(), "b"), busybox.Options{
		Annotations: map[string]string{"lockbox.service": "web"},
		Hooks: &specs.Hooks{CreateContainer: []specs.Hook{{
			Path: exe, Args: []string{exe, hotpath.CreateContainer},
			Env: append([]string{hookEnv + "=" + sock}, env...),
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	b.Spec.Version = version
	// A cgroup of its own, as containerd gives one per namespace and ID:
	// by default the path is the ID, and crun cleaning up a refused
	// container with the ID of a running one would kill that one.
	// The runtime removes it with the container.
	b.Spec.Linux.CgroupsPath = fmt.Sprintf("/lockbox-agent-test-%d-%d", os.Getpid(), cgroupSeq.Add(1))
	if err := b.WriteSpec(); err != nil {
		t.Fatal(err)
	}
	return b
}

var cgroupSeq atomic.Int64

func readRecord(t *testing.T, state, id string) record {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "containers", id+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestHookModeKnowsTheContainer runs real containers whose createContainer
// hook asks the agent for fds and attaches them itself. The agent records
// the container's process (not the hook's, not the host's pid 1, which is
// what runc's hooks see the container's init as) with its start time; a
// second container with the same ID (another runtime root: another
// containerd namespace) is refused and the first keeps its secrets; a hook
// naming a process outside its container is refused; once the container
// is gone without a release, Reap wipes it by its process.
func TestHookModeKnowsTheContainer(t *testing.T) {
	for name, runtime := range runtimes(t) {
		t.Run(name, func(t *testing.T) {
			state := t.TempDir()
			a := newAgent(t, state, newCache(t))
			sock := serve(t, a)
			r, version := runtime(t)
			ctx := busybox.Context(t)

			if err := r.Run(ctx, "hooked", hookedBundle(t, sock, version)); err != nil {
				t.Fatal(err)
			}
			pid, err := r.Pid(ctx, "hooked")
			if err != nil {
				t.Fatal(err)
			}
			start, err := pidStart(pid)
			if err != nil {
				t.Fatal(err)
			}
			rec := readRecord(t, state, "hooked")
			if rec.Pid != pid || rec.PidStart != start || rec.Rootfs != "" {
				t.Errorf("record %+v, want pid %d started at %d and no rootfs", rec, pid, start)
			}
			if ns, _ := mntNS(strconv.Itoa(pid)); rec.MntNS != ns {
				t.Errorf("record's namespace %d, the container's %d", rec.MntNS, ns)
			}
			if got, err := catIn(t, r, "hooked", "/run/secrets/db_pw"); err != nil || got != "hunter2" {
				t.Fatalf("cat db_pw in the hooked container: %q, %v", got, err)
			}

			// The same ID under another runtime root, while the first runs.
			other, _ := runtime(t)
			err = other.Run(ctx, "hooked", hookedBundle(t, sock, version))
			if err == nil {
				t.Fatal("a second running container got the ID of a running one")
			}
			if name == "runc" {
				// crun does not pass a failed hook's message on.
				want := fmt.Sprintf("container ID hooked is already in use by a running container (pid %d)", pid)
				if !strings.Contains(err.Error(), want) {
					t.Errorf("refusal %q does not say %q", err, want)
				}
			}
			// A hook that names a process of no container it is in: the
			// host's init as the host numbers it would be 1 too, so name
			// one the container has not.
			if err := other.Run(ctx, "liar", hookedBundle(t, sock, version, hookPidEnv+"=77")); err == nil {
				t.Error("a hook naming a process outside its container was served")
			} else if name == "runc" && !strings.Contains(err.Error(), "pid 77 is not the process of the container the caller runs in") {
				t.Errorf("refusal of a lying hook: %v", err)
			}
			if got, err := catIn(t, r, "hooked", "/run/secrets/db_pw"); err != nil || got != "hunter2" {
				t.Errorf("after the refusals the first container reads %q, %v", got, err)
			}
			if n := a.Reap(context.Background()); n != 0 {
				t.Errorf("reaped %d while the container runs", n)
			}

			// The agent restarts: the record's pid finds the container,
			// and /proc/<pid>/root its mount (the hook's rootfs, the
			// bundle's, is gone from the container's namespace).
			secret, err := os.Open(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", pid))
			if err != nil {
				t.Fatal(err)
			}
			defer secret.Close()
			a.Close()
			b := newAgent(t, state, newCache(t))
			if n := b.Reap(context.Background()); n != 0 {
				t.Errorf("restarted agent reaped %d while the container runs", n)
			}
			if got, err := catIn(t, r, "hooked", "/run/secrets/db_pw"); err != nil || got != "hunter2" {
				t.Errorf("after the restart the container reads %q, %v", got, err)
			}

			// The restarted agent watches the process the hook's pid
			// named (the container's init, which exec'd the command).
			if n := b.exits.watching(); n != 1 {
				t.Errorf("restarted agent watches %d processes, want 1", n)
			}

			// The container ends without a release: the exit watch goes by
			// its pid and wipes the mount taken back; Reap finds nothing.
			end := time.Now()
			if err := r.Delete(ctx, "hooked"); err != nil {
				t.Fatal(err)
			}
			waitReleased(t, b, "hooked", end, 5*time.Second)
			if got := b.ReleaseCounts(); got != (ReleaseCounts{Exit: 1}) {
				t.Errorf("release counts %+v, want one exit", got)
			}
			if n := b.Reap(context.Background()); n != 0 {
				t.Errorf("reaped %d after the exit watch, want 0", n)
			}
			buf := make([]byte, 16)
			if n, _ := secret.ReadAt(buf, 0); n != 0 {
				t.Errorf("the ended container's secret still reads %q", buf[:n])
			}
		})
	}
}

// updateWeb replaces service web's grants: db_pw stays, api_key leaves, a
// new secret tls comes.
func updateWeb(t *testing.T, a *Agent) {
	t.Helper()
	msg := &dispatcher.SessionMessage{Type: dispatcher.SessionMessage_INCREMENTAL, Revision: 2, Changes: []*dispatcher.AssignmentChange{
		{Assignment: &dispatcher.Assignment{Item: &dispatcher.Assignment_Secret{Secret: &dispatcher.SecretData{Id: "s3", Name: "tls", Data: []byte("cert-v2")}}}},
		{Assignment: &dispatcher.Assignment{Item: &dispatcher.Assignment_Service{Service: &dispatcher.ServiceGrants{
			ServiceId: "svc1", ServiceName: "web", Grants: []*dispatcher.Grant{
				{SecretId: "s1", SecretName: "db_pw"},
				{SecretId: "s3", SecretName: "tls"},
			}}}}},
	}}
	if err := a.grants.Apply(msg); err != nil {
		t.Fatal(err)
	}
}

// TestReusedIDAfterContainerEnded: a container ends without a release
// (its shim killed) and a new container reuses its ID after a service
// update. The new one must get the service's grants as they are now, and
// the old mount must be wiped, not handed on.
func TestReusedIDAfterContainerEnded(t *testing.T) {
	state := t.TempDir()
	a := newAgent(t, state, newCache(t))
	r := busybox.NewRunc(t)
	ctx := context.Background()
	pid1 := runContainer(t, r, "reuse")
	if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "reuse", Service: "web", Pid: int32(pid1)}}); err != nil {
		t.Fatal(err)
	}
	// Keep the first container's secret file open: it outlives the
	// container and shows whether the old mount was wiped.
	old, err := os.Open(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", pid1))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := r.Delete(busybox.Context(t), "reuse"); err != nil {
		t.Fatal(err)
	}
	updateWeb(t, a)

	pid2 := runContainer(t, r, "reuse")
	if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "reuse", Service: "web", Pid: int32(pid2)}}); err != nil {
		t.Fatalf("prepare of the new container with the ID: %v", err)
	}
	if got, err := catIn(t, r, "reuse", "/run/secrets/tls"); err != nil || got != "cert-v2" {
		t.Errorf("new container reads tls %q, %v", got, err)
	}
	if got, err := catIn(t, r, "reuse", "/run/secrets/db_pw"); err != nil || got != "hunter2" {
		t.Errorf("new container reads db_pw %q, %v", got, err)
	}
	if _, err := catIn(t, r, "reuse", "/run/secrets/cfg/key"); err == nil {
		t.Error("new container sees api_key, which left the service")
	}
	buf := make([]byte, 16)
	if n, _ := old.ReadAt(buf, 0); n != 0 {
		t.Errorf("the ended container's secret still reads %q", buf[:n])
	}
	if rec := readRecord(t, state, "reuse"); rec.Pid != pid2 || len(rec.Targets) != 2 {
		t.Errorf("record %+v, want the new container's pid %d and 2 targets", rec, pid2)
	}
}

// TestIDInUseByRunningContainer: two containerd namespaces may both run a
// container "web" (here: two runtime roots). The agent keys by ID alone;
// the second must be refused, and the first keep its secrets.
func TestIDInUseByRunningContainer(t *testing.T) {
	state := t.TempDir()
	a := newAgent(t, state, newCache(t))
	ns1, ns2 := busybox.NewRunc(t), busybox.NewRunc(t)
	ctx := context.Background()
	pid1 := runContainer(t, ns1, "web")
	pid2 := runContainer(t, ns2, "web")
	if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "web", Service: "web", Pid: int32(pid1)}}); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("container ID web is already in use by a running container (pid %d)", pid1)
	for _, req := range []*api.PrepareRequest{
		{Attach: true, Container: &api.Container{Id: "web", Service: "web", Pid: int32(pid2)}},
		{Container: &api.Container{Id: "web", Service: "web", Pid: int32(pid2), Rootfs: "/nonexistent"}},
		{Attach: true, Container: &api.Container{Id: "web", Service: "other", Pid: int32(pid2)}},
	} {
		_, files, err := a.Prepare(ctx, req)
		for _, f := range files {
			f.Close()
		}
		// As the local API reports it (its one mapping of the
		// agent's domain errors).
		e := localapi.WireError(err)
		if err == nil || e.Code != api.Error_INVALID || e.Message != want {
			t.Errorf("prepare %v: %v, want INVALID %q", req, err, want)
		}
	}
	if got, err := catIn(t, ns1, "web", "/run/secrets/db_pw"); err != nil || got != "hunter2" {
		t.Errorf("first container reads %q, %v after the refusals", got, err)
	}
	if _, err := catIn(t, ns2, "web", "/run/secrets/db_pw"); err == nil {
		t.Error("second container got secrets")
	}
	if rec := readRecord(t, state, "web"); rec.Pid != pid1 {
		t.Errorf("record now names pid %d, want %d", rec.Pid, pid1)
	}
	// The same container asking again is served.
	if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "web", Service: "web", Pid: int32(pid1)}}); err != nil {
		t.Errorf("the holder asking again: %v", err)
	}
}

// TestPrepareAgainWithOtherMappings: the mount's files are owned for the
// id mappings of the first Prepare; a second one with other mappings must
// not get it.
func TestPrepareAgainWithOtherMappings(t *testing.T) {
	a := newAgent(t, t.TempDir(), newCache(t))
	ctx := context.Background()
	c := &api.Container{Id: "mapped", Service: "web", Pid: int32(os.Getpid()), Rootfs: "/nonexistent"}
	prepare := func() error {
		_, files, err := a.Prepare(ctx, &api.PrepareRequest{Container: c})
		for _, f := range files {
			f.Close()
		}
		return err
	}
	if err := prepare(); err != nil {
		t.Fatal(err)
	}
	if err := prepare(); err != nil {
		t.Fatalf("again with the same mappings: %v", err)
	}
	c.UidMappings = []*api.IDMapping{{ContainerId: 0, HostId: 100000, Size: 65536}}
	c.GidMappings = c.UidMappings
	err := prepare()
	// As the local API reports it (its one mapping of the
	// agent's domain errors).
	e := localapi.WireError(err)
	if err == nil || e.Code != api.Error_INVALID || !strings.Contains(e.Message, "other user-namespace id mappings") {
		t.Errorf("again with other mappings: %v", err)
	}
}

// TestRecoverTakesOnlyItsOwnMount: a record that knows its container only
// by a mount namespace inode (an older hook's) whose inode now belongs to
// another running container. After a restart, the agent must not take
// that container's mount for the recorded one, nor wipe it when the
// recorded one is released.
func TestRecoverTakesOnlyItsOwnMount(t *testing.T) {
	state := t.TempDir()
	r := busybox.NewRunc(t)
	ctx := context.Background()
	first := newAgent(t, state, newCache(t))
	pid := runContainer(t, r, "c2")
	if _, _, err := first.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "c2", Service: "web", Pid: int32(pid)}}); err != nil {
		t.Fatal(err)
	}
	ns, err := mntNS(strconv.Itoa(pid))
	if err != nil {
		t.Fatal(err)
	}
	stale := record{ID: "c1", Service: "web", Targets: []string{"/run/secrets/db_pw", "/run/secrets/cfg/key"}, MntNS: ns}
	if err := first.records.put(stale); err != nil {
		t.Fatal(err)
	}
	first.Close()

	second := newAgent(t, state, newCache(t))
	list, _ := second.List(ctx)
	if len(list.GetContainers()) != 2 {
		t.Fatalf("after restart: %v", list)
	}
	if err := second.Release(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if got, err := catIn(t, r, "c2", "/run/secrets/db_pw"); err != nil || got != "hunter2" {
		t.Fatalf("releasing c1 took c2's secret: %q, %v", got, err)
	}
	if err := second.ReleaseRequest(ctx, &api.ReleaseRequest{ContainerId: "c2", Pid: int32(pid)}); err != nil {
		t.Fatal(err)
	}
	// c2's own mount was taken back, so its release wiped it.
	if got, err := catIn(t, r, "c2", "/run/secrets/db_pw"); err == nil && got == "hunter2" {
		t.Error("c2's secret readable after its release")
	}
}

// TestHostCallerNamingAPid: a caller that attaches itself but runs in the
// agent's own mount namespace is in no container, and cannot name one's
// process.
func TestHostCallerNamingAPid(t *testing.T) {
	a := newAgent(t, t.TempDir(), newCache(t))
	c, err := localapi.Dial(serve(t, a))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := busybox.Context(t)
	_, files, err := c.Prepare(ctx, &api.PrepareRequest{Container: &api.Container{Id: "host", Service: "web", Pid: int32(os.Getpid()), Rootfs: "/nonexistent"}})
	for _, f := range files {
		f.Close()
	}
	// As the local API reports it (its one mapping of the
	// agent's domain errors).
	e := localapi.WireError(err)
	if err == nil || e.Code != api.Error_INVALID || !strings.Contains(e.Message, "not in the container's mount namespace") {
		t.Errorf("prepare from the host naming a pid: %v", err)
	}
	// Without a pid it is served as before (a tool, a test), and the
	// record names nothing to judge it by.
	_, files, err = c.Prepare(ctx, &api.PrepareRequest{Container: &api.Container{Id: "host", Service: "web", Rootfs: "/nonexistent"}})
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	if rec := readRecord(t, filepath.Dir(a.records.dir), "host"); rec.identity().known() {
		t.Errorf("record of a host caller names %+v", rec.identity())
	}
}
