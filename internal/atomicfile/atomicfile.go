package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile writes data to path with mode perm, replacing any file there.
// A missing parent directory is created 0700: what goes through here is
// state or credentials, for root only.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := writeTemp(path, data, perm, true)
	if err != nil {
		return err
	}
	if err := rename(tmp, path); err != nil {
		return err
	}
	syncDir(filepath.Dir(path))
	return nil
}

// CreateFile is WriteFile that refuses to replace: it fails with an error
// satisfying errors.Is(err, fs.ErrExist) when path exists, even if another
// process creates it between the check and the write (a link, unlike a
// rename, never replaces). Used for files that must never be overwritten,
// such as a key-encryption key.
func CreateFile(path string, data []byte, perm os.FileMode) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("write %s: %w", path, os.ErrExist)
	}
	tmp, err := writeTemp(path, data, perm, true)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // the link leaves the temp name behind
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	syncDir(filepath.Dir(path))
	return nil
}

// ReplaceFile is WriteFile without fsync: path is replaced atomically
// against a crash of this process (a reader sees the old file or the new
// one), but not against a crash of the machine. For state that must
// outlive a process, not a reboot (the agent's container records, a
// container's bundle config: after a reboot the container is gone too), on
// paths where a sync would cost milliseconds per container start.
func ReplaceFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := writeTemp(path, data, perm, false)
	if err != nil {
		return err
	}
	return rename(tmp, path)
}

// rename moves the written temp file onto path, and removes it if it
// cannot: once renamed there is nothing left to remove, and a remove of
// the old name would be a system call (a lookup in the directory) that can
// only fail, on every write, the agent's container records among them.
func rename(tmp, path string) error {
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// write is (*os.File).Write; tests make it fail half-way.
var write = (*os.File).Write

// writeTemp writes data to a new temp file beside path, closed (and synced
// when sync is set), and returns its name. On error nothing is left behind.
func writeTemp(path string, data []byte, perm os.FileMode, sync bool) (name string, err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// CreateTemp made it 0600 already; Chmod sets the wanted mode before
	// any byte is written (and is what Windows understands of a mode).
	if err := f.Chmod(perm); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := write(f, data); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			return "", fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return f.Name(), nil
}

// syncDir makes the new name durable. It is best effort: Windows cannot
// open a directory for syncing, and the data itself is already synced.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
