//go:build linux

package shim

import (
	"os/exec"
	"testing"
	"time"
)

// watchExit fires when the watched process exits, and not while it runs:
// of two processes watched through the same poller, only the one killed
// fires.
func TestWatchExit(t *testing.T) {
	start := func() *exec.Cmd {
		cmd := exec.Command("sleep", "600")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	alive, killed := start(), start()
	aliveFired, killedFired := make(chan struct{}), make(chan struct{})
	if err := watchExit(alive.Process.Pid, func() { close(aliveFired) }); err != nil {
		t.Fatal(err)
	}
	if err := watchExit(killed.Process.Pid, func() { close(killedFired) }); err != nil {
		t.Fatal(err)
	}
	// Not reaped: the pidfd turns readable at the exit itself, before any
	// wait (the runc shim reaps the init later).
	if err := killed.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-killedFired:
	case <-time.After(10 * time.Second):
		t.Fatal("the exit of a watched process was not seen")
	}
	select {
	case <-aliveFired:
		t.Fatal("a process that still runs was seen to exit")
	default:
	}
	if err := alive.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-aliveFired:
	case <-time.After(10 * time.Second):
		t.Fatal("the exit of the second watched process was not seen")
	}
	// A process that is gone cannot be watched: the caller falls back to
	// the exit event.
	alive.Wait()
	if err := watchExit(alive.Process.Pid, func() {}); err == nil {
		t.Error("watching a reaped process succeeded")
	}
}
