//go:build linux

package linux

import (
	"fmt"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// inMountNamespace runs fn in pid's mount namespace with an O_PATH fd on
// the container's root: rootfs opened inside that namespace, or the
// process's own root (/proc/<pid>/root) when rootfs is empty. fn runs on a
// goroutine that locks its OS thread and never unlocks it: a thread whose fs
// struct and mount namespace changed must not run other goroutines, so the
// runtime ends it when the goroutine returns.
func inMountNamespace(pid int, rootfs string, fn func(root int) error) error {
	// A pidfd pins the process: setns through it cannot land in a process
	// that reused the pid, and a liveness check after opening its root
	// proves /proc/<pid> still named it.
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("enter container: open pid %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	root := -1
	if rootfs == "" {
		// Open the root from here: it is the process's root, whatever its
		// namespace's root is.
		if root, err = unix.Open("/proc/"+strconv.Itoa(pid)+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
			return fmt.Errorf("enter container: open root of pid %d: %w", pid, err)
		}
		defer unix.Close(root)
		if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
			return fmt.Errorf("enter container: pid %d: %w", pid, err)
		}
	}
	enter := func() error {
		// setns(CLONE_NEWNS) refuses a thread sharing its fs struct.
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fmt.Errorf("enter container: unshare fs: %w", err)
		}
		if err := unix.Setns(pidfd, unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("enter container: enter mount namespace of pid %d: %w", pid, err)
		}
		r := root
		if r < 0 {
			fd, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("enter container: open container rootfs %s: %w", rootfs, err)
			}
			defer unix.Close(fd)
			r = fd
		}
		return fn(r)
	}
	return onThrowawayThread(enter)
}

// onThrowawayThread runs fn on an OS thread that the runtime discards
// afterwards, so that fn may change what the thread shares (its fs struct,
// its mount namespace) without any other goroutine ever running there.
func onThrowawayThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- runLocked(fn) }()
	return <-errc
}

// runLocked locks the calling goroutine's thread and runs fn there, unless
// it is the process's main thread: the runtime never discards that one, and
// /proc/self shows its namespaces to the whole process. Then fn runs on a
// new goroutine, which cannot be scheduled here while this one holds the
// thread, and this thread is left untouched and unlocked again. The caller
// must return right after, so that the thread, if fn ran on it, dies locked.
func runLocked(fn func() error) error {
	runtime.LockOSThread()
	if unix.Gettid() != unix.Getpid() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- fn()
	}()
	err := <-errc
	runtime.UnlockOSThread()
	return err
}
