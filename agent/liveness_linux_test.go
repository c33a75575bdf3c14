package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
)

// TestLiveness covers the two ways a record names its container: a pid
// with its start time, and a mount namespace (for callers that attach
// themselves, like an OCI hook, and give no pid).
func TestLiveness(t *testing.T) {
	// The shell says "ready" from inside the new namespace, then becomes
	// sleep in it.
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", "echo ready; exec sleep 600")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("child said %q: %v", line, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	pid := cmd.Process.Pid
	start, err := pidStart(pid)
	if err != nil {
		t.Fatal(err)
	}
	self, err := mntNS("self")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := mntNS(strconv.Itoa(pid))
	if err != nil {
		t.Fatal(err)
	}
	if ns == self || ns == 0 {
		t.Fatal("child never entered a new mount namespace")
	}

	tests := []struct {
		name string
		rec  record
		want bool
	}{
		{"pid and start time", record{Pid: pid, PidStart: start}, true},
		{"pid reused (start time differs)", record{Pid: pid, PidStart: start + 1}, false},
		{"mount namespace", record{MntNS: ns}, true},
		{"unknown namespace", record{MntNS: ns + 1<<40}, false},
		{"nothing to go by", record{}, false},
		// A record with a pid goes by the pid alone: a live namespace with
		// the recorded inode may be another container's by now.
		{"pid reused, namespace live", record{Pid: pid, PidStart: start + 1, MntNS: ns}, false},
		{"pid and namespace", record{Pid: pid, PidStart: start, MntNS: ns}, true},
	}
	live := liveNamespaces()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, got := tt.rec.alive(live); got != tt.want {
				t.Errorf("alive = %v, want %v", got, tt.want)
			}
		})
	}

	cmd.Process.Kill()
	<-exited
	live = liveNamespaces()
	for _, rec := range []record{{Pid: pid, PidStart: start}, {MntNS: ns}, {Pid: pid, PidStart: start, MntNS: self}} {
		if _, ok := rec.alive(live); ok {
			t.Errorf("record %+v alive after the process ended", rec)
		}
	}
}

func TestParseStat(t *testing.T) {
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 1234567 19 20"
	tests := []struct {
		name string
		in   string
		want procStat
		err  bool
	}{
		{"plain", "42 (sleep) S 7" + tail, procStat{ppid: 7, start: 1234567}, false},
		{"name with spaces and parentheses", "42 (a) b (c)) S 7" + tail, procStat{ppid: 7, start: 1234567}, false},
		{"zombie", "42 (sleep) Z 7" + tail, procStat{}, true},
		{"dead", "42 (sleep) X 7" + tail, procStat{}, true},
		{"no parenthesis", "42 sleep S 7" + tail, procStat{}, true},
		{"short", "42 (sleep) S 7 1 2", procStat{}, true},
		{"ppid not a number", "42 (sleep) S x" + tail, procStat{}, true},
		{"negative ppid", "42 (sleep) S -1" + tail, procStat{}, true},
		{"start not a number", "42 (sleep) S 7 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 x 19", procStat{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat(tt.in)
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("parseStat = %+v, %v; want %+v, error %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add("42 (sleep) S 7 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 1234567 19 20")
	f.Add("1 (a) b)) Z 0")
	f.Fuzz(func(t *testing.T, s string) {
		st, err := parseStat(s)
		if err != nil && st != (procStat{}) {
			t.Errorf("error %v with a result %+v", err, st)
		}
		if err == nil && st.ppid < 0 {
			t.Errorf("negative ppid from %q", s)
		}
	})
}

// TestHookContainerProcess finds a container's process from a process in
// it, as the agent does for an OCI createContainer hook. The "container"
// is made as runc and crun make one at hook time: a runtime (unshare)
// whose child is the container's init (a shell, pid 1 in new mount and pid
// namespaces), whose child is the hook.
func TestHookContainerProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.Command("unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private", "sh", "-c", "sleep 3600 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	init := waitChild(t, ctx, cmd.Process.Pid)
	child := waitChild(t, ctx, init)
	if ns, _ := mntNS(strconv.Itoa(child)); ns == 0 || ns == mustMntNS(t, "self") {
		t.Fatal("the hook is not in a mount namespace of its own")
	}

	tests := []struct {
		name    string
		peer    int
		claimed int
		want    int // 0: refused
	}{
		{"runc: the init as the container's pid namespace numbers it", child, 1, init},
		{"a hook in the runtime's namespace", cmd.Process.Pid, 0, 0},
		{"crun: no pid given", child, 0, init},
		{"the init's host pid is not the container's number for it", child, init, 0},
		{"the caller itself", child, 2, 0},
		{"a pid no ancestor has", child, 77, 0},
		{"the init asking for itself", init, 1, 0},
		{"a caller on the host", os.Getpid(), 0, 0},
		{"a caller on the host naming the host's init", os.Getpid(), 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := hookContainerProcess(tt.peer, tt.claimed)
			if tt.want == 0 {
				if err == nil {
					t.Errorf("found %d, want a refusal", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

// waitChild returns the first child of pid, waiting for it to appear:
// another process's fork sends no event to wait on, so /proc is polled.
func waitChild(t testing.TB, ctx context.Context, pid int) int {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			c, err := strconv.Atoi(f[0])
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		select {
		case <-ctx.Done():
			t.Fatal(errors.New("the container's init started no child"))
		case <-tick.C:
		}
	}
}

func mustMntNS(t testing.TB, pid string) uint64 {
	t.Helper()
	ns, err := mntNS(pid)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// BenchmarkHookContainerProcess measures what finding a hook's container
// adds to a hook-mode Prepare; the baseline, in the same run, is the one
// stat read an attach-mode Prepare pays (pidStart).
func BenchmarkHookContainerProcess(b *testing.B) {
	cmd := exec.Command("unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private", "sh", "-c", "sleep 3600 & wait")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	init := waitChild(b, ctx, cmd.Process.Pid)
	hook := waitChild(b, ctx, init)
	b.Run("baseline-pidStart", func(b *testing.B) {
		for b.Loop() {
			if _, err := pidStart(init); err != nil {
				b.Fatal(err)
			}
		}
		benchinfo.Print(b)
	})
	for _, claimed := range []int{1, 0} {
		b.Run(fmt.Sprintf("claimed=%d", claimed), func(b *testing.B) {
			for b.Loop() {
				if p, err := hookContainerProcess(hook, claimed); err != nil || p != init {
					b.Fatal(p, err)
				}
			}
			benchinfo.Print(b)
		})
	}
}
