//go:build !windows

package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// stateDir makes the state directory (0700) if it is missing. An existing
// one is used as it is, never chmod'ed (a --state-dir of /var/lib must not
// close /var/lib to everyone else), but only if the agent's user owns it
// and no one else may enter it: others could list the container records,
// or replace the node's credentials and plant records.
func stateDir(dir string) error {
	err := os.Mkdir(dir, 0o700)
	switch {
	case err == nil:
		// Mkdir applied the umask; the mode must not depend on it.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
		return nil
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
		return stateDir(dir)
	case !errors.Is(err, fs.ErrExist):
		return fmt.Errorf("state dir: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("state dir %s: not a directory", dir)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("state dir %s: owned by uid %d, not by the agent's user (uid %d); give the agent a directory of its own", dir, st.Uid, os.Geteuid())
	case st.Mode&0o077 != 0:
		return fmt.Errorf("state dir %s: mode %#o lets other users in; give the agent a directory of its own, mode 0700 (a missing one is made so)", dir, st.Mode&0o7777)
	}
	return nil
}
