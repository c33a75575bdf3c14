package sysmon

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// samples is how many times every thread's system call is read, and
	// sampleGap the pause between two reads: about 5 ms in all.
	samples   = 40
	sampleGap = 100 * time.Microsecond
	// seenFor is the share of samples in which sysmon must be seen in
	// nanosleep (it is awake a few microseconds of every 70), and
	// othersBelow the share no other thread may reach.
	seenFor     = 0.75
	othersBelow = 0.25
)

// Relax sets the timer slack of the Go runtime's sysmon thread to slack
// and returns its thread ID. It needs CAP_SYS_NICE (root); it changes no
// other thread.
func Relax(slack time.Duration) (int, error) {
	if slack <= 0 {
		return 0, fmt.Errorf("sysmon: timer slack %v: must be positive", slack)
	}
	tid, err := find()
	if err != nil {
		return 0, err
	}
	// /proc/<tid> names a thread as well as a process; only the thread's
	// own file sets its slack (/proc/<pid>/task/<tid> has none).
	if err := os.WriteFile("/proc/"+strconv.Itoa(tid)+"/timerslack_ns", []byte(strconv.FormatInt(slack.Nanoseconds(), 10)), 0); err != nil {
		return 0, fmt.Errorf("sysmon: set the timer slack of thread %d: %w", tid, err)
	}
	return tid, nil
}

// find returns the thread that sleeps in nanosleep in nearly every
// sample. The sampling keeps its own processor busy throughout (it spins
// between samples rather than sleeping): sysmon polls only while some
// processor is, and deep-sleeps on a futex otherwise.
func find() (int, error) {
	seen := map[int]int{}
	for range samples {
		tids, err := threads()
		if err != nil {
			return 0, err
		}
		for _, tid := range tids {
			if inNanosleep(tid) {
				seen[tid]++
			}
		}
		for start := time.Now(); time.Since(start) < sampleGap; {
		}
	}
	best, bestN, next := 0, 0, 0
	for tid, n := range seen {
		switch {
		case n > bestN:
			best, bestN, next = tid, n, bestN
		case n > next:
			next = n
		}
	}
	if float64(bestN) < seenFor*samples || float64(next) >= othersBelow*samples {
		return 0, fmt.Errorf("%w (thread %d in nanosleep in %d of %d samples, the next one in %d)", ErrNotFound, best, bestN, samples, next)
	}
	return best, nil
}

// threads lists the process's thread IDs.
func threads() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("sysmon: list threads: %w", err)
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// inNanosleep reports whether thread tid is blocked in nanosleep now: the
// first field of its /proc syscall file is the call's number ("running"
// while it runs).
func inNanosleep(tid int) bool {
	b, err := os.ReadFile("/proc/self/task/" + strconv.Itoa(tid) + "/syscall")
	if err != nil {
		return false
	}
	nr, _, _ := strings.Cut(string(b), " ")
	return nr == strconv.Itoa(unix.SYS_NANOSLEEP)
}
