package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/agent/localapi"
	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/plugin/runtime/agentconn"
)

// TestReleaseOfSameIDInAnotherNamespace: two containerd namespaces (here
// two runtime roots) each run a container "web"; the agent holds the
// first's secrets (the second's Prepare is refused, TestIDInUseByRunningContainer).
// Every release the second container's life can send, through the real
// local API, by the clients the adapters use, must leave the first's
// secrets alone while it runs: before releases were bound to the holder,
// the first of them wiped them. The holder's own release, and any release
// once the holder has ended, still wipe.
func TestReleaseOfSameIDInAnotherNamespace(t *testing.T) {
	state := t.TempDir()
	a := newAgent(t, state, newCache(t))
	sock := serve(t, a)
	cl, err := localapi.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	ns1, ns2 := busybox.NewRunc(t), busybox.NewRunc(t)
	pid1 := runContainer(t, ns1, "web")
	pid2 := runContainer(t, ns2, "web")
	if _, _, err := cl.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "web", Service: "web", Pid: int32(pid1)}}); err != nil {
		t.Fatal(err)
	}
	start1, err := pidStart(pid1)
	if err != nil {
		t.Fatal(err)
	}
	start2, err := pidStart(pid2)
	if err != nil {
		t.Fatal(err)
	}
	// The holder's secret as the holder sees it, through an fd that
	// outlives a wipe and reads nothing after one.
	held, err := os.Open(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", pid1))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	intact := func(after string) {
		t.Helper()
		buf := make([]byte, 16)
		if n, _ := held.ReadAt(buf, 0); string(buf[:n]) != "hunter2" {
			t.Fatalf("after %s the holder's secret reads %q", after, buf[:n])
		}
		if got, err := catIn(t, ns1, "web", "/run/secrets/db_pw"); err != nil || got != "hunter2" {
			t.Fatalf("after %s the holder reads %q, %v", after, got, err)
		}
		if rec := readRecord(t, state, "web"); rec.Pid != pid1 {
			t.Fatalf("after %s the record names pid %d, want %d", after, rec.Pid, pid1)
		}
	}

	conn, err := agentconn.Dial(sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	attacks := []struct {
		name    string
		release func() error
	}{
		{"the other namespace's runtime delete, naming its own process (lockbox-runtime)", func() error {
			return conn.Release("web", agentconn.Process{Pid: pid2, Start: start2})
		}},
		{"the same, by the localapi client", func() error {
			return cl.ReleaseProcess(ctx, "web", int32(pid2), start2)
		}},
		{"a release naming no process (a poststop hook on the host, lockbox-nri)", func() error {
			return cl.Release(ctx, "web")
		}},
		{"a release naming the holder's pid with another start time (a reused pid)", func() error {
			return cl.ReleaseProcess(ctx, "web", int32(pid1), start1+1)
		}},
		{"a release naming a process that has gone", func() error {
			return cl.ReleaseProcess(ctx, "web", 1<<22+1, 0)
		}},
		{"an in-process release naming nothing (lockbox agent --nri)", func() error {
			return a.Release(ctx, "web")
		}},
		{"a release from inside the other container's mount namespace (its OCI hook)", func() error {
			return releaseFrom(t, sock, pid2, "web")
		}},
	}
	for _, at := range attacks {
		if err := at.release(); err != nil {
			t.Errorf("%s: %v, want success (its container holds nothing here)", at.name, err)
		}
		intact(at.name)
	}
	if l, _ := a.List(ctx); len(l.GetContainers()) != 1 {
		t.Fatalf("the agent lists %v after the other namespace's releases", l)
	}

	// The holder's own release, naming its process as runc's state does,
	// wipes.
	if err := conn.Release("web", agentconn.Process{Pid: pid1, Start: start1}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, _ := held.ReadAt(buf, 0); n != 0 {
		t.Errorf("the holder's release left its secret readable: %q", buf[:n])
	}
	if _, err := os.Stat(filepath.Join(state, "containers", "web.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record left after the holder's release: %v", err)
	}

	// A running holder's own hook (inside its mount namespace, naming no
	// process: a createContainer hook whose attach failed) wipes.
	pid4 := runContainer(t, ns1, "hooked")
	if _, _, err := cl.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "hooked", Service: "web", Pid: int32(pid4)}}); err != nil {
		t.Fatal(err)
	}
	hooked, err := os.Open(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", pid4))
	if err != nil {
		t.Fatal(err)
	}
	defer hooked.Close()
	if err := releaseFrom(t, sock, pid4, "hooked"); err != nil {
		t.Fatal(err)
	}
	if n, _ := hooked.ReadAt(buf, 0); n != 0 {
		t.Errorf("the holder's hook released it, yet its secret reads %q", buf[:n])
	}

	// A holder that has ended is released by anyone: how runc delete,
	// poststop and NRI StopContainer come, after the container's exit.
	pid3 := runContainer(t, ns1, "ended")
	if _, _, err := cl.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "ended", Service: "web", Pid: int32(pid3)}}); err != nil {
		t.Fatal(err)
	}
	ended, err := os.Open(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", pid3))
	if err != nil {
		t.Fatal(err)
	}
	defer ended.Close()
	if err := ns1.Delete(busybox.Context(t), "ended"); err != nil {
		t.Fatal(err)
	}
	if err := cl.Release(ctx, "ended"); err != nil {
		t.Fatal(err)
	}
	// Its process has exited: the wipe follows the answer.
	a.wiping.wait()
	if n, _ := ended.ReadAt(buf, 0); n != 0 {
		t.Errorf("an ended holder's secret still reads %q after a release naming nothing", buf[:n])
	}
	if l, _ := a.List(ctx); len(l.GetContainers()) != 0 {
		t.Errorf("the agent lists %v after every release", l)
	}
}

// TestReleaseAnswersBeforeWipe: the release of a container whose process
// has exited (what the shim's Delete sends, after runc's delete) answers
// before the wipe, which follows with the container's lock held: a Prepare
// reusing the ID waits for it, and the record stays on disk until the wipe
// is done, so that an agent killed between the answer and the wipe leaves
// its successor the record to recover from. A running holder's own
// release still wipes before it answers.
func TestReleaseAnswersBeforeWipe(t *testing.T) {
	state := t.TempDir()
	a := newAgent(t, state, newCache(t))
	defer a.Close()
	reached, proceed := make(chan string, 1), make(chan struct{})
	a.wiping.hook = func(id string) {
		reached <- id
		<-proceed
	}
	ctx := context.Background()
	ns := busybox.NewRunc(t)
	pid := runContainer(t, ns, "gone")
	if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "gone", Service: "web", Pid: int32(pid)}}); err != nil {
		t.Fatal(err)
	}
	start, err := pidStart(pid)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := os.Open(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer secret.Close()
	read := func() string {
		buf := make([]byte, 16)
		n, _ := secret.ReadAt(buf, 0)
		return string(buf[:n])
	}
	if err := ns.Delete(busybox.Context(t), "gone"); err != nil {
		t.Fatal(err)
	}

	// The answer comes while the wiper waits in the hook.
	if err := a.ReleaseRequest(ctx, &api.ReleaseRequest{ContainerId: "gone", Pid: int32(pid), PidStart: start}); err != nil {
		t.Fatal(err)
	}
	if id := <-reached; id != "gone" {
		t.Fatalf("wiper for %q", id)
	}
	if got := read(); got != "hunter2" {
		t.Fatalf("before the wipe the secret reads %q: the release did not answer first", got)
	}
	if rec := readRecord(t, state, "gone"); rec.Pid != pid {
		t.Fatalf("between the answer and the wipe the record names pid %d, want %d", rec.Pid, pid)
	}

	// An agent killed here: its successor finds the record of a container
	// that has ended and forgets it (the tmpfs went with the killed
	// agent's fds).
	succ := filepath.Join(t.TempDir(), "state")
	if err := os.CopyFS(succ, os.DirFS(state)); err != nil {
		t.Fatal(err)
	}
	next := newAgent(t, succ, newCache(t))
	if l, _ := next.List(ctx); len(l.GetContainers()) != 0 {
		t.Errorf("the successor holds %v", l.GetContainers())
	}
	if _, err := os.Stat(filepath.Join(succ, "containers", "gone.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the successor kept the ended container's record: %v", err)
	}
	next.Close()

	// A Prepare reusing the ID waits for the wipe (the wiper holds the
	// container's lock), then builds its own mount.
	pid2 := runContainer(t, ns, "gone")
	prepared := make(chan error, 1)
	go func() {
		_, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "gone", Service: "web", Pid: int32(pid2)}})
		prepared <- err
	}()
	select {
	case err := <-prepared:
		t.Fatalf("a Prepare reusing the ID returned (%v) before the wipe", err)
	default:
	}
	close(proceed)
	if err := <-prepared; err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "" {
		t.Errorf("after the wipe the old secret reads %q", got)
	}
	if c := a.ReleaseCounts(); c.Release != 1 || c.Reuse != 0 {
		t.Errorf("release counts %+v: want the release's wipe, before the reusing Prepare", c)
	}
	if rec := readRecord(t, state, "gone"); rec.Pid != pid2 {
		t.Errorf("the reusing container's record names pid %d, want %d", rec.Pid, pid2)
	}

	// The running holder's own release wipes before it answers.
	a.wiping.hook = func(id string) { t.Errorf("release of running %s wiped after its answer", id) }
	now, err := os.Open(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", pid2))
	if err != nil {
		t.Fatal(err)
	}
	defer now.Close()
	start2, err := pidStart(pid2)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.ReleaseRequest(ctx, &api.ReleaseRequest{ContainerId: "gone", Pid: int32(pid2), PidStart: start2}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, _ := now.ReadAt(buf, 0); n != 0 {
		t.Errorf("a running holder's release answered before its wipe: %q", buf[:n])
	}
	if _, err := os.Stat(filepath.Join(state, "containers", "gone.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record left after the running holder's release: %v", err)
	}
}

// releaseFromEnv makes the test binary a caller that sends a Release from
// inside a container's mount namespace, as an OCI hook does: "pid,socket,id".
const releaseFromEnv = "LOCKBOX_AGENT_TEST_RELEASE_FROM"

// releaseNoReplyEnv, set, makes that release one that asks for no answer.
const releaseNoReplyEnv = "LOCKBOX_AGENT_TEST_RELEASE_NO_REPLY"

func init() {
	if os.Getenv(releaseFromEnv) != "" {
		// The agent reads the caller's namespace from /proc/<pid>/ns/mnt,
		// the main thread's: enter the container from that thread.
		runtime.LockOSThread()
	}
}

// releaseFromMain connects to the agent (the socket is a host path), then
// moves its main thread into pid's mount namespace and releases id.
func releaseFromMain(spec string) int {
	parts := strings.SplitN(spec, ",", 3)
	if len(parts) != 3 {
		fmt.Fprintln(os.Stderr, "bad", releaseFromEnv)
		return 2
	}
	c, err := agentconn.Dial(parts[1], 5*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	ns, err := unix.Open("/proc/"+parts[0]+"/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		fmt.Fprintln(os.Stderr, "unshare:", err)
		return 1
	}
	if err := unix.Setns(ns, unix.CLONE_NEWNS); err != nil {
		fmt.Fprintln(os.Stderr, "setns:", err)
		return 1
	}
	if os.Getenv(releaseNoReplyEnv) != "" {
		// Written, not waited for; the connection closed at once. The
		// process stays in the namespace until its stdin closes: what a
		// pid reused there would show the agent.
		if err := c.SendRelease(parts[2], agentconn.Process{}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		c.Close()
		io.Copy(io.Discard, os.Stdin)
		return 0
	}
	if err := c.Release(parts[2], agentconn.Process{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// releaseFrom runs releaseFromMain in a child and returns its error.
func releaseFrom(t *testing.T, sock string, pid int, id string) error {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), releaseFromEnv+"="+strconv.Itoa(pid)+","+sock+","+id)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("release from pid %d's namespace: %v: %s", pid, err, out)
	}
	return nil
}

// A holder whose process has exited but is not reaped yet (a zombie: runc
// deleting a created container kills its init, and the shim reaps it a
// moment later) does not run (readStat takes a zombie for gone): a release
// naming no process, as the shim's after runc's delete does (plugin/shim
// recordClaim relies on this), wipes it then, not at the exit watch's
// drain 300 ms later.
func TestReleaseWipesZombieHolder(t *testing.T) {
	a := newAgent(t, t.TempDir(), newCache(t))
	t.Cleanup(a.Close)
	ctx := context.Background()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := false
	t.Cleanup(func() {
		if !reaped {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	_, files, err := a.Prepare(ctx, &api.PrepareRequest{Container: &api.Container{Id: "z1", Service: "web", Pid: int32(cmd.Process.Pid), Rootfs: "/nonexistent"}})
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	// Killed, not waited for: a zombie until the test reaps it.
	if err := cmd.Process.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := a.ReleaseRequest(ctx, &api.ReleaseRequest{ContainerId: "z1"}); err != nil {
		t.Fatal(err)
	}
	a.wiping.wait()
	if list, _ := a.List(ctx); len(list.GetContainers()) != 0 {
		t.Errorf("zombie holder still held after a release (%v after its exit): %v", time.Since(killed), list)
	}
	cmd.Wait()
	reaped = true
}

// wait returns once no wipe is under way (the tests' view of the wipes
// that follow their release's answer).
func (w *asyncWipes) wait() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waitLocked()
}
