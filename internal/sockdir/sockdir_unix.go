//go:build unix

package sockdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Ensure applies the package's rule to dir. what names the socket in
// errors ("admin socket"); hint is the directory to suggest instead.
func Ensure(dir, what, hint string) error {
	err := os.Mkdir(dir, 0o700)
	switch {
	case err == nil:
		// Mkdir applied the umask; the mode must not depend on it.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("%s directory %s: %w", what, dir, err)
		}
		return nil
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return fmt.Errorf("%s directory %s: %w", what, dir, err)
		}
		return Ensure(dir, what, hint)
	case !errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%s directory %s: %w", what, dir, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("%s directory %s: %w", what, dir, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("%s directory %s: not a directory", what, dir)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s directory %s: owned by uid %d, not by this process's user (uid %d); use a directory only root can write, such as %s", what, dir, st.Uid, os.Geteuid(), hint)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("%s directory %s: mode %#o lets other users replace the socket; use a directory only root can write, such as %s", what, dir, st.Mode&0o7777, hint)
	}
	return nil
}
