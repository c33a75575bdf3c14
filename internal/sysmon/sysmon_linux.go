package sysmon

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// Relax sets the timer slack of the Go runtime's sysmon thread to slack
// and returns its thread ID. It needs CAP_SYS_NICE (root); it changes no
// other thread.
func Relax(slack time.Duration) (int, error) {
	if slack <= 0 {
		return 0, fmt.Errorf("sysmon: timer slack %v: must be positive", slack)
	}
	tid, err := Thread()
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

// Thread returns sysmon's thread ID: the lowest above the process ID,
// which is the main thread's. A thread ID below it means the kernel's
// counter wrapped while the process started its threads, and then the
// order says nothing.
func Thread() (int, error) {
	tids, err := threads()
	if err != nil {
		return 0, err
	}
	pid := os.Getpid()
	first := 0
	for _, tid := range tids {
		switch {
		case tid < pid:
			return 0, fmt.Errorf("%w: thread %d is older than the process %d by its ID (the ID counter wrapped)", ErrNotFound, tid, pid)
		case tid > pid && (first == 0 || tid < first):
			first = tid
		}
	}
	if first == 0 {
		return 0, fmt.Errorf("%w: the process has one thread", ErrNotFound)
	}
	return first, nil
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
