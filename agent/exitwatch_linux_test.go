package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
)

// wipeDeadline is how soon after its process exits a container's secrets
// must be gone (issue 12: wipe on stop, not on delete).
const wipeDeadline = time.Second

// fdsOn lists the fds of this process open on a file of device dev: the
// detached tmpfs mount, and any clone of it, are such fds.
func fdsOn(dev uint64) []string {
	var out []string
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Stat("/proc/self/fd/"+e.Name(), &st) == nil && st.Dev == dev {
			out = append(out, e.Name())
		}
	}
	return out
}

// openFds counts this process's open fds.
func openFds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// waitReleased waits until the agent holds nothing for id, and returns how
// long that took from since. The agent sends no event a test could wait
// on, so List is polled, every millisecond: the number is the wipe
// latency to within that.
func waitReleased(t testing.TB, a *Agent, id string, since time.Time, limit time.Duration) time.Duration {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		list, err := a.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		held := false
		for _, c := range list.GetContainers() {
			held = held || c.GetId() == id
		}
		took := time.Since(since)
		if !held {
			return took
		}
		if took > limit {
			t.Fatalf("agent still holds %s %v after its process was killed", id, took)
		}
		<-tick.C
	}
}

// secretsDev is the device of the secrets tmpfs in the container whose
// process is pid, seen through one of its files (each target is a
// single-file mount of it).
func secretsDev(t testing.TB, pid int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", pid), &st); err != nil {
		t.Fatal(err)
	}
	return st.Dev
}

// TestExitWipesWithoutRelease: the process of a prepared container is
// killed and nobody releases it (nerdctl stop, ctr task kill without
// delete): within a second the agent holds nothing for it, has closed its
// fds on the tmpfs and forgotten the record, and counts it as an exit. A
// later release (the delete that may still come) succeeds and changes
// nothing.
func TestExitWipesWithoutRelease(t *testing.T) {
	state := t.TempDir()
	a := newAgent(t, state, newCache(t))
	t.Cleanup(a.Close)
	r := busybox.NewRunc(t)
	ctx := context.Background()
	pid := runContainer(t, r, "c1")
	if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "c1", Service: "web", Pid: int32(pid)}}); err != nil {
		t.Fatal(err)
	}
	dev := secretsDev(t, pid)
	if len(fdsOn(dev)) == 0 {
		t.Fatal("the agent holds no fd on the tmpfs of a running container: nothing to check")
	}
	if n := a.exits.watching(); n != 1 {
		t.Fatalf("watching %d processes, want 1", n)
	}

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
	if n := a.exits.watching(); n != 0 {
		t.Errorf("still watching %d processes", n)
	}
	if got := a.ReleaseCounts(); got != (ReleaseCounts{Exit: 1}) {
		t.Errorf("release counts %+v, want one exit", got)
	}
	// The runtime's delete comes late, or twice: both succeed.
	if err := r.Delete(busybox.Context(t), "c1"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := a.ReleaseRequest(ctx, &api.ReleaseRequest{ContainerId: "c1", Pid: int32(pid)}); err != nil {
			t.Errorf("release after the exit wipe: %v", err)
		}
	}
	if got := a.ReleaseCounts(); got != (ReleaseCounts{Exit: 1}) {
		t.Errorf("release counts %+v after late releases, want one exit and nothing else", got)
	}
}

// TestExitWatchAfterRestart: an agent restarted while a container runs
// takes its mount back and watches its process again, so the exit still
// wipes within a second.
func TestExitWatchAfterRestart(t *testing.T) {
	state := t.TempDir()
	r := busybox.NewRunc(t)
	ctx := context.Background()
	first := newAgent(t, state, newCache(t))
	pid := runContainer(t, r, "c1")
	if _, _, err := first.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "c1", Service: "web", Pid: int32(pid)}}); err != nil {
		t.Fatal(err)
	}
	first.Close()
	dev := secretsDev(t, pid)
	// A restart takes the first agent's fds with its process; in this
	// process they stay (linux.Mount has no Close): close them here.
	for _, fd := range fdsOn(dev) {
		n, _ := strconv.Atoi(fd)
		unix.Close(n)
	}

	second := newAgent(t, state, newCache(t))
	t.Cleanup(second.Close)
	if n := second.exits.watching(); n != 1 {
		t.Fatalf("restarted agent watches %d processes, want 1", n)
	}
	if len(fdsOn(dev)) == 0 {
		t.Fatal("the restarted agent took no fd on the running container's tmpfs")
	}
	kill := time.Now()
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("wiped %v after the kill", waitReleased(t, second, "c1", kill, wipeDeadline))
	if fds := fdsOn(dev); len(fds) != 0 {
		t.Errorf("fds %v still open on the tmpfs after the exit", fds)
	}
	if got := second.ReleaseCounts(); got != (ReleaseCounts{Exit: 1}) {
		t.Errorf("release counts %+v, want one exit", got)
	}
}

// startSleeper starts a host process that lives until killed, and returns
// a func that kills and reaps it.
func startSleeper(t testing.TB) (*exec.Cmd, func()) {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Kill()
		cmd.Wait()
	}
	t.Cleanup(stop)
	return cmd, stop
}

// TestExitWatchAdd: the watch opens a pidfd and checks the pid's start
// time after it, so a pid that names another process than the one recorded
// (reused) or a process that has exited is never watched, and no fd stays
// behind either way.
func TestExitWatchAdd(t *testing.T) {
	live, _ := startSleeper(t)
	liveStart, err := pidStart(live.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// A zombie: exited, not reaped yet.
	zombie, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zombie.Wait() })
	zStart := liveStart // never read: a zombie has no start time to read
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, zombie.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	// A pid no process has: a reaped one.
	reaped, stopReaped := startSleeper(t)
	reapedPid := reaped.Process.Pid
	reapedStart, _ := pidStart(reapedPid)
	stopReaped()

	w, err := newExitWatch(func(string, identity) {})
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	base := openFds(t)
	for _, tc := range []struct {
		name string
		who  identity
		want error
	}{
		{"live process", identity{Pid: live.Process.Pid, PidStart: liveStart}, nil},
		{"pid reused: start time differs", identity{Pid: live.Process.Pid, PidStart: liveStart + 1}, errProcessGone},
		{"exited, not reaped", identity{Pid: zombie.Pid, PidStart: zStart}, errProcessGone},
		{"exited and reaped", identity{Pid: reapedPid, PidStart: reapedStart}, errProcessGone},
		{"no pid", identity{MntNS: 4026531840}, errNoProcess},
		{"no start time", identity{Pid: live.Process.Pid}, errNoProcess},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := w.add("c1", tc.who)
			if !errors.Is(err, tc.want) {
				t.Fatalf("add: %v, want %v", err, tc.want)
			}
			want := 0
			if tc.want == nil {
				want = 1
			}
			if n := w.watching(); n != want {
				t.Errorf("watching %d, want %d", n, want)
			}
			w.forget("c1")
			if n := openFds(t); n != base {
				t.Errorf("%d fds open, %d before", n, base)
			}
		})
	}
}

// TestPrepareRefusesEndedProcess: the rule for a process found gone when
// the watch starts (it exited, or its pid was reused, between Prepare's
// identification and the watch) is the one record.alive gives Reap and a
// reusing Prepare: the container has ended. The agent wipes it at once
// (counted as an exit), forgets the record, and the Prepare fails.
func TestPrepareRefusesEndedProcess(t *testing.T) {
	state := t.TempDir()
	a := newAgent(t, state, newCache(t))
	t.Cleanup(a.Close)
	cmd, _ := startSleeper(t)
	pid := cmd.Process.Pid
	start, err := pidStart(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Prepare has recorded and holds the container; the process under its
	// pid is not the one it identified (a reused pid, as the watch sees it).
	rec := record{ID: "c1", Service: "web", Pid: pid, PidStart: start + 1}
	if err := a.records.put(rec); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	a.held["c1"] = &held{rec: rec}
	a.mu.Unlock()
	if err := a.watchPrepared(rec); err == nil {
		t.Fatal("watch of a reused pid accepted")
	}
	if n := a.exits.watching(); n != 0 {
		t.Errorf("watching %d processes after refusing", n)
	}
	if list, _ := a.List(context.Background()); len(list.GetContainers()) != 0 {
		t.Errorf("still held: %v", list)
	}
	if _, err := os.Stat(filepath.Join(state, "containers", "c1.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record kept: %v", err)
	}
	if got := a.ReleaseCounts(); got != (ReleaseCounts{Exit: 1}) {
		t.Errorf("release counts %+v, want one exit", got)
	}
}

// TestManyExitsLeaveNoFd: 200 containers (host processes, their mounts
// handed over) exit; each is wiped by the watch with no release, and the
// agent's process is left with the fds it had before: no pidfd, no mount
// fd.
func TestManyExitsLeaveNoFd(t *testing.T) {
	const n = 200
	a := newAgent(t, t.TempDir(), newCache(t))
	t.Cleanup(a.Close)
	ctx := context.Background()
	prepare := func(id string, pid int) {
		_, files, err := a.Prepare(ctx, &api.PrepareRequest{Container: &api.Container{Id: id, Service: "web", Pid: int32(pid), Rootfs: "/nonexistent"}})
		for _, f := range files {
			f.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// One round first, so that whatever the runtime and the mounter open
	// once (the netpoller, caches) is in the baseline.
	warm, stopWarm := startSleeper(t)
	prepare("warm", warm.Process.Pid)
	stopWarm()
	waitReleased(t, a, "warm", time.Now(), 5*time.Second)
	base := openFds(t)

	stops := make([]func(), n)
	for i := range n {
		cmd, stop := startSleeper(t)
		stops[i] = stop
		prepare(fmt.Sprintf("c%d", i), cmd.Process.Pid)
	}
	if w := a.exits.watching(); w != n {
		t.Fatalf("watching %d processes, want %d", w, n)
	}
	if fds := openFds(t); fds < base+n {
		t.Fatalf("%d fds with %d containers held, baseline %d: is anything held?", fds, n, base)
	}
	killed := time.Now()
	for _, stop := range stops {
		stop()
	}
	var took []time.Duration
	for i := range n {
		took = append(took, waitReleased(t, a, fmt.Sprintf("c%d", i), killed, 5*time.Second))
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("all %d wiped %v after the first kill", n, took[n-1])
	if list, _ := a.List(ctx); len(list.GetContainers()) != 0 {
		t.Errorf("still held: %v", list)
	}
	if w := a.exits.watching(); w != 0 {
		t.Errorf("still watching %d", w)
	}
	if fds := openFds(t); fds != base {
		t.Errorf("%d fds open after %d containers exited, %d before", fds, n, base)
	}
	if got := a.ReleaseCounts().Exit; got != n+1 {
		t.Errorf("%d exits counted, want %d", got, n+1)
	}
}

// TestExitWipeSparesDrainingOutput: a container's last command spliced a
// secret into a pipe (busybox cat sends a file with sendfile, which hands
// the pipe the tmpfs pages themselves) and exited. The runtime's reader,
// a little behind, must still read the secret, not the wipe's zeros; the
// wipe still comes within the second.
func TestExitWipeSparesDrainingOutput(t *testing.T) {
	a := newAgent(t, t.TempDir(), newCache(t))
	t.Cleanup(a.Close)
	r := busybox.NewRunc(t)
	pid := runContainer(t, r, "c1")
	if _, _, err := a.Prepare(context.Background(), &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "c1", Service: "web", Pid: int32(pid)}}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", pid))
	if err != nil {
		t.Fatal(err)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	n, err := unix.Splice(int(f.Fd()), nil, p[1], nil, 64, 0)
	f.Close()
	unix.Close(p[1])
	if err != nil || n != int64(len("hunter2")) {
		t.Fatalf("splice the secret into a pipe: %d bytes, %v", n, err)
	}

	kill := time.Now()
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// A reader behind by a third of the drain time: the agent has seen the
	// exit (within a millisecond) but must not have wiped yet.
	time.Sleep(exitDrain / 3)
	buf := make([]byte, 64)
	m, err := unix.Read(p[0], buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:m]); got != "hunter2" {
		t.Errorf("the pipe holds %q after the exit, want the secret the container wrote", got)
	}
	t.Logf("wiped %v after the kill", waitReleased(t, a, "c1", kill, wipeDeadline))
}

// TestProcessExited: a release answers before its wipe only when this
// says the holder's process has exited; a running process, or a record
// that names none, must never pass for exited.
func TestProcessExited(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	start, err := pidStart(pid)
	if err != nil {
		t.Fatal(err)
	}
	running := []struct {
		name string
		who  identity
		want bool
	}{
		{"running", identity{Pid: pid, PidStart: start}, false},
		{"no pid", identity{}, false},
		{"no start time", identity{Pid: pid}, false},
		{"the pid with another start (its process has gone)", identity{Pid: pid, PidStart: start + 1}, true},
	}
	for _, tc := range running {
		if got := processExited(tc.who); got != tc.want {
			t.Errorf("%s: processExited = %v, want %v", tc.name, got, tc.want)
		}
	}
	// A zombie (exited, not yet reaped) has exited; so has a reaped one.
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Wait for the exit without reaping it.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if !processExited(identity{Pid: pid, PidStart: start}) {
		t.Error("a zombie is taken to run")
	}
	cmd.Wait()
	if !processExited(identity{Pid: pid, PidStart: start}) {
		t.Error("a reaped process is taken to run")
	}
}

// TestExitWatchManyAtOnce: more processes exit before the loop reads than
// one read of the set takes (64). The loop waits for the set in the
// runtime's netpoller, which reports it once when it becomes ready: every
// exit must still be reported, each once, with nothing new arriving to
// wake the loop again.
func TestExitWatchManyAtOnce(t *testing.T) {
	const n = 150
	var mu sync.Mutex
	seen := map[string]int{}
	all := make(chan struct{})
	w, err := newExitWatch(func(id string, _ identity) {
		mu.Lock()
		defer mu.Unlock()
		seen[id]++
		if len(seen) == n {
			close(all)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	var stops []func()
	for i := range n {
		cmd, stop := startSleeper(t)
		start, err := pidStart(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.add(fmt.Sprintf("c%d", i), identity{Pid: cmd.Process.Pid, PidStart: start}); err != nil {
			t.Fatal(err)
		}
		stops = append(stops, stop)
	}
	// All of them have exited (and been reaped) before the loop runs.
	for _, stop := range stops {
		stop()
	}
	w.start()
	select {
	case <-all:
	case <-time.After(10 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%d of %d exits reported", len(seen), n)
	}
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for id, k := range seen {
		if k != 1 {
			t.Errorf("%s reported %d times", id, k)
		}
	}
	if got := w.watching(); got != 0 {
		t.Errorf("still watching %d", got)
	}
}

// TestReleaseStopsTheExitDrain: a container released after its process's
// exit but before exitDrain (the runtime's delete, usually) leaves no
// drain to fire: the release stops it.
func TestReleaseStopsTheExitDrain(t *testing.T) {
	a := newAgent(t, t.TempDir(), newCache(t))
	t.Cleanup(a.Close)
	ctx := context.Background()
	cmd, stop := startSleeper(t)
	pid := cmd.Process.Pid
	_, files, err := a.Prepare(ctx, &api.PrepareRequest{Container: &api.Container{Id: "c1", Service: "web", Pid: int32(pid), Rootfs: "/nonexistent"}})
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	stop()
	exitedAt := time.Now()
	var drain *time.Timer
	for drain == nil {
		a.mu.Lock()
		if h := a.held["c1"]; h != nil {
			drain = h.drain
		}
		a.mu.Unlock()
		if time.Since(exitedAt) > 5*time.Second {
			t.Fatal("the exit was not seen within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
	if err := a.ReleaseRequest(ctx, &api.ReleaseRequest{ContainerId: "c1", Pid: int32(pid)}); err != nil {
		t.Fatal(err)
	}
	// The wipe of an ended holder runs after the answer.
	waitReleased(t, a, "c1", exitedAt, 5*time.Second)
	a.wiping.wait()
	if got := a.ReleaseCounts(); got != (ReleaseCounts{Release: 1}) {
		t.Fatalf("release counts %+v %v after the exit, want the release's alone (did the drain come first?)", got, time.Since(exitedAt))
	}
	if drain.Stop() {
		t.Error("the exit's drain was still armed after the release")
	}
}
