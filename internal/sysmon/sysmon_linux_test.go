package sysmon

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// slackOf reads thread tid's timer slack.
func slackOf(t *testing.T, tid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/timerslack_ns")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRelax: the thread Relax picks is the one the runtime sleeps in
// nanosleep (checked again, independently of find), it gets the slack, and
// no other thread of the process does.
func TestRelax(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setting another thread's timer slack needs CAP_SYS_NICE (root)")
	}
	before := map[int]int64{}
	tids, err := threads()
	if err != nil {
		t.Fatal(err)
	}
	for _, tid := range tids {
		before[tid] = slackOf(t, tid)
	}
	const slack = 700 * time.Microsecond
	tid, err := Relax(slack)
	if err != nil {
		t.Fatal(err)
	}
	if got := slackOf(t, tid); got != slack.Nanoseconds() {
		t.Errorf("thread %d: timer slack %d ns, want %d", tid, got, slack.Nanoseconds())
	}
	// Relax's thread sleeps in nanosleep whenever a processor is busy:
	// keep this one busy and look at it alone.
	in := 0
	const looks = 200
	for range looks {
		if inNanosleep(tid) {
			in++
		}
		for start := time.Now(); time.Since(start) < 50*time.Microsecond; {
		}
	}
	if in < looks/2 {
		t.Errorf("thread %d was in nanosleep in %d of %d looks: not the runtime's system monitor", tid, in, looks)
	}
	for other, was := range before {
		if other == tid {
			continue
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(other) + "/timerslack_ns")
		if err != nil {
			continue // the thread has exited
		}
		if got, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); got != was {
			t.Errorf("thread %d: timer slack %d ns, was %d: Relax changed a thread other than sysmon's", other, got, was)
		}
	}
	if _, err := Relax(0); err == nil {
		t.Error("Relax(0): no error")
	}
}
