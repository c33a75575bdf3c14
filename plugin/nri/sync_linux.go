package nri

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/containerd/nri/pkg/api"
	"golang.org/x/sys/unix"
)

// evictContainer stops c by killing its init process (SIGKILL through a
// pidfd), which is what containerd's own NRI eviction does (a CRI stop
// with no grace period). NRI's eviction cannot be used: the stub of NRI
// v0.12 has no way to send one (UpdateContainers carries updates only, a
// SynchronizeResponse has no eviction) and the runtime side containerd
// 2.4.2 builds (NRI v0.12.3) drops the evictions of plugin responses.
//
// The pid comes from the runtime's listing and may have been reused since:
// the process the pidfd names must sit in a cgroup named by the
// container's ID (CRI names each container's cgroup by its ID, with either
// cgroup driver), else nothing is signalled (errNotRunning).
func evictContainer(procRoot string, c *api.Container) error {
	pid := int(c.GetPid())
	if pid <= 0 || c.GetId() == "" {
		return errNotRunning
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return errNotRunning
	}
	if err != nil {
		return fmt.Errorf("pidfd of pid %d: %w", pid, err)
	}
	defer unix.Close(fd)
	// Read after the pidfd is open: if the pid was reused in between, the
	// cgroup read is the new process's, which is not the container's.
	b, err := os.ReadFile(procRoot + "/" + strconv.Itoa(pid) + "/cgroup")
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return errNotRunning
	}
	if err != nil {
		return fmt.Errorf("cgroup of pid %d: %w", pid, err)
	}
	if !inCgroupOf(string(b), c.GetId()) {
		return errNotRunning
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return errNotRunning
		}
		return fmt.Errorf("kill pid %d: %w", pid, err)
	}
	return nil
}

// inCgroupOf reports whether a /proc/PID/cgroup text ("ID:controllers:PATH"
// lines) puts the process in a cgroup whose path names the container id.
func inCgroupOf(cgroup, id string) bool {
	for _, line := range strings.Split(cgroup, "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && strings.Contains(f[2], id) {
			return true
		}
	}
	return false
}
