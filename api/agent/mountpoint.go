package agent

import "fmt"

// FdAttached is the fd_index of a MountPoint that the agent attached in
// the container itself: no fd travels with it.
const FdAttached int32 = -1

// AttachedMount is a mount the agent attached at target.
func AttachedMount(target string) *MountPoint {
	return &MountPoint{Target: target, FdIndex: FdAttached}
}

// HandedOverMount is a mount for the caller to attach at target, whose
// detached mount is the fd at index i among the fds sent with the response.
func HandedOverMount(target string, i int) *MountPoint {
	return &MountPoint{Target: target, FdIndex: int32(i)}
}

// Attached reports whether the agent attached m itself.
func (m *MountPoint) Attached() bool { return m.GetFdIndex() == FdAttached }

// Fd returns the index of m's fd among nfds fds that came with the
// response; false when m was attached by the agent.
func (m *MountPoint) Fd(nfds int) (int, bool, error) {
	i := m.GetFdIndex()
	switch {
	case i == FdAttached:
		return 0, false, nil
	case i < 0 || int(i) >= nfds:
		return 0, false, fmt.Errorf("mount %s names fd %d of %d", m.GetTarget(), i, nfds)
	}
	return int(i), true, nil
}

// CheckFds verifies that every mount of r is attached or names one of the
// nfds fds that came with it.
func (r *PrepareResponse) CheckFds(nfds int) error {
	for _, m := range r.GetMounts() {
		if _, _, err := m.Fd(nfds); err != nil {
			return err
		}
	}
	return nil
}

// AllAttached reports whether the agent attached every mount of r itself.
func (r *PrepareResponse) AllAttached() bool {
	for _, m := range r.GetMounts() {
		if !m.Attached() {
			return false
		}
	}
	return true
}
