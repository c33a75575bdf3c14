package manager

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// memFile is a file that lives only in memory (memfd), named by a path
// (/proc/self/fd/N) for code that wants a path: etcd reads its peer key
// by path at every handshake. It is close-on-exec, so no child inherits it.
type memFile struct{ f *os.File }

func newMemFile(name string, data []byte) (*memFile, error) {
	f, err := memfd(name, data)
	if err != nil {
		return nil, err
	}
	return &memFile{f: f}, nil
}

func memfd(name string, data []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("manager: memfd for %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, fmt.Errorf("manager: memfd for %s: %w", name, err)
	}
	return f, nil
}

func (m *memFile) path() string { return "/proc/self/fd/" + strconv.Itoa(int(m.f.Fd())) }

// replace swaps the content at once: a new memfd is dup'ed onto the same
// descriptor number, so a reader opening the path sees the old file or the
// new one, never half of one.
func (m *memFile) replace(data []byte) error {
	n, err := memfd("replacement", data)
	if err != nil {
		return err
	}
	defer n.Close()
	if err := unix.Dup3(int(n.Fd()), int(m.f.Fd()), unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("manager: replace memfd: %w", err)
	}
	return nil
}

func (m *memFile) close() {
	// Overwrite before the last reference goes (etcd may hold none).
	if fi, err := m.f.Stat(); err == nil {
		_, _ = m.f.WriteAt(make([]byte, fi.Size()), 0)
	}
	m.f.Close()
}
