//go:build linux

package linux

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/mounter"
)

// Retired files (the old version of a file a live update replaced) must be
// overwritten, but not under a reader: a process that opened the old file
// before the swap keeps reading it, and must read valid old bytes to the
// end, never zeros mid-read. The kernel says when nobody holds a file
// open: a write lease (fcntl F_SETLEASE F_WRLCK) is granted only when the
// file has no open file description but the caller's (an mmap holds one
// too). reclaim takes it, overwrites the file with zeros, drops the lease,
// truncates and unlinks the file; a refused lease is tried again later.
//
// What the lease cannot see, and the grace before the first try covers:
//   - a process whose open of the target had looked the path up (on the
//     old mount) but not yet opened the file when the old mount was
//     detached opens it just after;
//   - bytes a reader spliced into a pipe (sendfile, splice: busybox cat
//     does) are the file's own pages, referenced by the pipe after the
//     reader closed the file: a consumer that reads the pipe after the
//     overwrite reads zeros. Seen in TestUpdateRotations with a 1 s grace,
//     once in about ten runs, on a 2-core machine at load 10-18 with four
//     host readers spinning: the container's shell had not read its
//     `$(cat ...)` pipe a second after cat closed the file.
// So the first try waits reclaimGrace, far longer than a path lookup or a
// pipe's consumer normally takes, at the price of the old bytes living on
// (in the container's tmpfs, never swapped) that long after a rotation.
// A process that holds an O_PATH fd (which the kernel does not count as
// open) and reopens it through /proc after the overwrite finds an empty
// file, never a secret.

// reclaimDelays space the tries: the first after reclaimGrace, then
// backing off to the last, repeated until the files go or the mount is
// wiped.
var reclaimDelays = []time.Duration{reclaimGrace, 10 * time.Second, 30 * time.Second, 60 * time.Second}

const reclaimGrace = 5 * time.Second

// Retired returns how many replaced files wait to be overwritten because
// a reader still holds them open.
func (m *Mount) Retired() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pending()
}

func (m *Mount) pending() int { return len(m.retired) + len(m.retiredClones) }

// retiredClone is a recovered file an update replaced: its clone (one of
// m.clones) is the only way to it.
type retiredClone struct {
	fd     int
	secret string
}

// scheduleReclaim starts the reclaim timer if files are retired and none
// is due. m.mu is held.
func (m *Mount) scheduleReclaim() {
	if m.pending() == 0 || m.reclaimTimer != nil || m.wiped {
		return
	}
	d := reclaimDelays[min(m.reclaimTries, len(reclaimDelays)-1)]
	m.reclaimTimer = time.AfterFunc(d, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.reclaimTimer = nil
		if m.wiped {
			return
		}
		if m.reclaimLocked() > 0 {
			m.reclaimTries++
		} else {
			m.reclaimTries = 0
		}
		m.scheduleReclaim()
	})
}

// reclaim overwrites and removes every retired file nobody holds open and
// returns how many are left.
func (m *Mount) reclaim() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reclaimLocked()
}

func (m *Mount) reclaimLocked() int {
	m.reclaimClones()
	if len(m.retired) == 0 || m.fd < 0 {
		return m.pending()
	}
	if err := m.setWritable(true); err != nil {
		return m.pending()
	}
	var left []mounter.File
	for _, f := range m.retired {
		done, err := reclaimFile(m.fd, f)
		if err != nil || !done {
			left = append(left, f)
		}
	}
	m.retired = left
	if err := m.setWritable(false); err != nil {
		m.broken = err
	}
	return m.pending()
}

// reclaimClones overwrites the retired recovered files nobody holds open,
// through their clones, and drops the clones.
func (m *Mount) reclaimClones() {
	var left []retiredClone
	for _, rc := range m.retiredClones {
		done, err := reclaimClone(rc.fd)
		if err != nil || !done {
			left = append(left, rc)
			continue
		}
		unix.Close(rc.fd)
		m.clones = slices.DeleteFunc(m.clones, func(fd int) bool { return fd == rc.fd })
	}
	m.retiredClones = left
}

// reclaimClone overwrites the file a recovered single-file clone shows if
// nothing holds it open, and reports whether it did. The clone is the
// agent's own private mount: making it writable shows nothing to anyone.
func reclaimClone(clone int) (bool, error) {
	if err := unix.MountSetattr(clone, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY}); err != nil {
		return false, err
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(clone), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false, err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_WRLCK); err != nil {
		return false, nil
	}
	err = zeroFill(fd, st.Size)
	unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK)
	if err == nil {
		err = unix.Ftruncate(fd, 0)
	}
	return err == nil, err
}

// reclaimFile overwrites and unlinks f if nothing holds it open, and
// reports whether it did.
func reclaimFile(dirfd int, f mounter.File) (bool, error) {
	// The size openRegular read is not used: it was read before the
	// lease, and a process that opened, grew and closed the file in
	// between would leave it short. Once the lease is held, nobody else
	// has the file open, and the fstat below reads the size to overwrite.
	fd, _, err := openRegular(dirfd, f.Name)
	if errors.Is(err, unix.ENOENT) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("reclaim secret %q: open: %w", f.SecretName, err)
	}
	if fd < 0 {
		// Not a regular file: nothing to overwrite, only a name.
		return true, unlinkName(dirfd, f)
	}
	defer unix.Close(fd)
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_WRLCK); err != nil {
		// EAGAIN: someone holds it open; later.
		return false, nil
	}
	var st unix.Stat_t
	err = unix.Fstat(fd, &st)
	if err == nil {
		err = zeroFill(fd, max(st.Size, f.Size))
	}
	// Drop the lease before truncating: a truncate is what a lease
	// guards against, and the overwrite is done.
	unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK)
	if err == nil {
		err = unix.Ftruncate(fd, 0)
	}
	if err != nil {
		return false, fmt.Errorf("reclaim secret %q: %w", f.SecretName, err)
	}
	return true, unlinkName(dirfd, f)
}

func unlinkName(dirfd int, f mounter.File) error {
	if err := unix.Unlinkat(dirfd, f.Name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("reclaim secret %q: unlink: %w", f.SecretName, err)
	}
	return nil
}
