//go:build linux

package shim

import (
	"os"

	"golang.org/x/sys/unix"
)

// watchExit calls fn once the process pid has exited, from a goroutine
// that waits in the Go runtime's poller (no thread held): a pidfd turns
// readable when its process exits. The pidfd pins the process, so a pid
// reused meanwhile is never watched by mistake. The runc service's TaskExit
// event says the same, but it reaches the shim's publisher only when the
// event forwarder, which sends every event to containerd one at a time,
// gets to it: under load after the client has seen the exit through its
// Wait and asked for the delete (BenchmarkShimPhases), too late for the
// delete to know it may release beside runc's delete.
func watchExit(pid int, fn func()) error {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return err
	}
	// Non-blocking, so os.NewFile registers it with the poller.
	f := os.NewFile(uintptr(fd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return err
	}
	go func() {
		defer f.Close()
		err := rc.Read(func(fd uintptr) bool { return exited(int(fd), 0) })
		if err != nil {
			// The poller would not take the pidfd: wait in the kernel
			// instead, holding a thread. Never call fn before the exit.
			for !exited(fd, -1) {
			}
		}
		fn()
	}()
	return nil
}

// exited polls the pidfd for up to timeout ms (-1: no limit) and reports
// whether its process has exited.
func exited(pidfd, timeout int) bool {
	pfd := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, timeout)
	return err == nil && n > 0 && pfd[0].Revents&(unix.POLLIN|unix.POLLHUP) != 0
}
