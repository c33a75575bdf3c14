package manager

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// memFile is a file that lives only in memory (memfd), named by a path
// (/proc/self/fd/N) for code that wants a path: etcd reads its peer key
// by path at every handshake. It is close-on-exec, so no child inherits
// it, and its pages are locked into RAM (mlock of a shared mapping), so
// the key is never written to swap either.
type memFile struct {
	mu  sync.Mutex
	f   *os.File
	mem []byte // the locked mapping of f's content
}

// retireDelay is how long a replaced content stays readable before it is
// overwritten: a reader that opened the path just before the replace
// (etcd, at a handshake) reads it in microseconds.
const retireDelay = time.Minute

func newMemFile(name string, data []byte) (*memFile, error) {
	f, mem, err := memfd(name, data)
	if err != nil {
		return nil, err
	}
	return &memFile{f: f, mem: mem}, nil
}

func memfd(name string, data []byte) (*os.File, []byte, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, nil, fmt.Errorf("manager: memfd for %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	if err := f.Truncate(int64(len(data))); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("manager: memfd for %s: %w", name, err)
	}
	// Lock the pages before the key is in them.
	mem, err := unix.Mmap(fd, 0, len(data), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("manager: memfd for %s: map: %w", name, err)
	}
	if err := unix.Mlock(mem); err != nil {
		unix.Munmap(mem)
		f.Close()
		return nil, nil, fmt.Errorf("manager: memfd for %s: lock in memory: %w", name, err)
	}
	_ = unix.Madvise(mem, unix.MADV_DONTDUMP)
	copy(mem, data)
	return f, mem, nil
}

func (m *memFile) path() string { return "/proc/self/fd/" + strconv.Itoa(int(m.f.Fd())) }

// replace swaps the content at once: a new memfd is dup'ed onto the same
// descriptor number, so a reader opening the path sees the old file or the
// new one, never half of one. The old content is overwritten a little
// later.
func (m *memFile) replace(data []byte) error {
	n, mem, err := memfd("replacement", data)
	if err != nil {
		return err
	}
	defer n.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := unix.Dup3(int(n.Fd()), int(m.f.Fd()), unix.O_CLOEXEC); err != nil {
		wipe(mem)
		return fmt.Errorf("manager: replace memfd: %w", err)
	}
	old := m.mem
	m.mem = mem
	time.AfterFunc(retireDelay, func() { wipe(old) })
	return nil
}

func (m *memFile) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	wipe(m.mem)
	m.mem = nil
	m.f.Close()
}

// wipe overwrites and unmaps a mapping of a memfd's content.
func wipe(mem []byte) {
	if mem == nil {
		return
	}
	clear(mem)
	unix.Munmap(mem)
}
