package sysmon

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestThreadIsSysmon holds Thread's finding to what sysmon does. With one
// processor spinning and the other in long system calls, sysmon takes
// the second back from each call and polls every 20 µs after (a voluntary
// context switch per sleep, hundreds in 100 ms), the caller's thread wakes
// once a call (every 5 ms), and the process's other threads sleep through.
// If a Go release started another thread before sysmon, the thread Thread
// names would not be it, and this fails.
func TestThreadIsSysmon(t *testing.T) {
	tid, err := Thread()
	if err != nil {
		t.Fatal(err)
	}
	// sysmon takes a processor back from a system call only when no other
	// is idle: two, both kept busy.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		ts := unix.NsecToTimespec((5 * time.Millisecond).Nanoseconds())
		for {
			select {
			case <-stop:
				return
			default:
				unix.Nanosleep(&ts, nil)
			}
		}
	}()
	before := switches(t)
	spin(100 * time.Millisecond)
	after := switches(t)
	close(stop)
	<-done
	best, bestN, next := 0, -1, 0
	for id, n := range after {
		d := n - before[id]
		switch {
		case d > bestN:
			best, bestN, next = id, d, max(bestN, 0)
		case d > next:
			next = d
		}
	}
	t.Logf("thread %d woke %d times in 100 ms of spinning, the next one %d times; Thread says %d", best, bestN, next, tid)
	if best != tid {
		t.Fatalf("Thread returned %d, but the thread that kept waking while a processor spun was %d (%d wake-ups, the next %d)", tid, best, bestN, next)
	}
	if bestN < 3*next {
		t.Fatalf("thread %d woke %d times in 100 ms, the next one %d times: not sysmon's polling", best, bestN, next)
	}
}

// TestRelax checks that Relax sets the slack of sysmon's thread and of no
// other thread.
func TestRelax(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root: setting another thread's timer slack needs CAP_SYS_NICE")
	}
	if _, err := Relax(0); err == nil {
		t.Fatal("Relax(0): no error")
	}
	before := slacks(t)
	tid, err := Relax(time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.WriteFile("/proc/"+strconv.Itoa(tid)+"/timerslack_ns", []byte(strconv.Itoa(before[tid])), 0)
	})
	want, _ := Thread()
	if tid != want {
		t.Fatalf("Relax changed thread %d, Thread says %d", tid, want)
	}
	for id, s := range slacks(t) {
		switch {
		case id == tid && s != int(time.Millisecond):
			t.Errorf("sysmon's thread %d: slack %d ns, want %d", id, s, time.Millisecond)
		case id != tid && s != before[id] && before[id] != 0:
			t.Errorf("thread %d: slack %d ns, was %d: Relax changed another thread", id, s, before[id])
		}
	}
}

// spin keeps this goroutine's processor busy for d without a system call
// or an allocation.
func spin(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
	}
}

// switches reads every thread's voluntary context switches.
func switches(t *testing.T) map[int]int {
	t.Helper()
	return perThread(t, "status", func(b []byte) (int, bool) {
		for _, line := range bytes.Split(b, []byte("\n")) {
			if v, ok := bytes.CutPrefix(line, []byte("voluntary_ctxt_switches:")); ok {
				n, err := strconv.Atoi(strings.TrimSpace(string(v)))
				return n, err == nil
			}
		}
		return 0, false
	})
}

// slacks reads every thread's timer slack, in nanoseconds.
func slacks(t *testing.T) map[int]int {
	t.Helper()
	return perThread(t, "timerslack_ns", func(b []byte) (int, bool) {
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		return n, err == nil
	})
}

// perThread reads file of every thread through its own /proc/<tid> (the
// only place timerslack_ns is) and parses it; a thread that ended
// meanwhile is left out.
func perThread(t *testing.T, file string, parse func([]byte) (int, bool)) map[int]int {
	t.Helper()
	tids, err := threads()
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int{}
	for _, tid := range tids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/" + file)
		if err != nil {
			continue
		}
		if n, ok := parse(b); ok {
			out[tid] = n
		}
	}
	return out
}
