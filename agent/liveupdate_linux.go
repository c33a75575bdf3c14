package agent

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/api/validation"
)

// signalContainer sends sig (validation.ParseSignal's syntax) to the
// container's process pid, started at start, through a pidfd: the pid is
// checked to still name that process after the pidfd pins it, so that a
// reused pid is never signalled. A process that still executes
// preStartExe (the runtime's init, see record.PreStartExe) is not
// signalled: errNotStarted.
func signalContainer(pid int, start uint64, preStartExe, sig string) error {
	n, err := validation.ParseSignal(sig)
	if err != nil {
		return err
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("open pid %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	if got, err := pidStart(pid); err != nil || got != start {
		return fmt.Errorf("pid %d is no longer the container's process", pid)
	}
	if preStartExe != "" && exeID(pid) == preStartExe {
		return errNotStarted
	}
	if err := unix.PidfdSendSignal(pidfd, unix.Signal(n), nil, 0); err != nil {
		return fmt.Errorf("signal %s to pid %d: %w", sig, pid, err)
	}
	return nil
}
