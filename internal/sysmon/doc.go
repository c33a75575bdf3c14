// Package sysmon lengthens the sleep of the Go runtime's system monitor
// (sysmon), the one thread the runtime runs without a processor.
//
// While any of a process's processors is busy, sysmon wakes every 20 µs
// (plus the kernel's timer slack, 50 µs by default) to take processors
// back from long system calls and to preempt long-running goroutines; it
// backs off only after a millisecond in which it found nothing to take,
// which a burst of system calls never gives it. In the agent, whose every
// claim is such a burst (mounts, files, /proc), those wake-ups were more
// than a quarter of its CPU samples and some hundred nanosleep calls a
// claim (docs/performance.md). A larger timer slack on that one thread lets
// the kernel defer its wake-ups; the agent's other threads keep theirs, so
// the scheduler's own short sleeps (a spinning thread's back-off before it
// steals a goroutine) and every timer stay as they were.
//
// The runtime gives no handle on sysmon's thread, but it makes it first:
// runtime.main starts sysmon before it runs any package's init or starts
// any other thread, so sysmon has the lowest thread ID after the main
// thread's (the process ID), unless the kernel's ID counter wrapped
// around meanwhile, which shows as a thread ID below the process ID; then
// Relax changes nothing and says so. The package's tests hold the finding
// to sysmon's behaviour (the one thread that keeps waking while a
// processor spins), so a Go release that starts another thread first
// fails them rather than slowing a stranger.
package sysmon
