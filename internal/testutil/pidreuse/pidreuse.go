// Package pidreuse gives a test a process that holds a given pid: what an
// attacker does by forking until it holds the pid of a process that
// exited, made quick and certain with ns_last_pid. Root in the initial pid
// namespace only (tests that need it run as root in CI).
package pidreuse

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// Take starts processes made by cmd until one gets pid (the kernel hands
// out the pid after ns_last_pid next, if it is free), and returns it; the
// test's cleanup kills it. It fails the test if no process got pid.
func Take(t testing.TB, pid int, cmd func() *exec.Cmd) *exec.Cmd {
	t.Helper()
	for try := 0; try < 200; try++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Fatalf("set the next pid (root in the initial pid namespace only): %v", err)
		}
		c := cmd()
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		if c.Process.Pid == pid {
			t.Cleanup(func() { c.Process.Kill(); c.Wait() })
			return c
		}
		c.Process.Kill()
		c.Wait()
	}
	t.Fatalf("no process got pid %d in 200 tries", pid)
	return nil
}
