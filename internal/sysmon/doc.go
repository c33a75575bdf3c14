// Package sysmon lengthens the sleep of the Go runtime's system monitor
// (sysmon), the one thread the runtime runs without a processor.
//
// While any of a process's processors is busy, sysmon wakes every 20 µs
// (plus the kernel's timer slack, 50 µs by default) to take processors
// back from long system calls and to preempt long-running goroutines. In
// the agent, whose every claim is a burst of short system calls (mounts,
// files, /proc), those wake-ups were about a third of its CPU samples and
// some hundred nanosleep calls a claim (docs/performance.md). A larger
// timer slack on that one thread lets the kernel defer its wake-ups; the
// agent's other threads keep theirs, so the scheduler's own short sleeps
// (a spinning thread's back-off before it steals a goroutine) and every
// timer stay as they were.
//
// The runtime gives no handle on sysmon's thread, so Relax finds it: with
// one processor kept busy, sysmon sleeps in nanosleep between its checks,
// and no other thread of a Go process sleeps there for long. A thread seen
// in nanosleep in nearly every one of a series of samples of every
// thread's /proc/self/task/<tid>/syscall is sysmon; if no single thread
// is, Relax changes nothing and says so.
package sysmon
