//go:build !unix

package sockdir

import (
	"fmt"
	"os"
)

// Ensure makes a missing dir; elsewhere than on unix the socket's
// protection is its own ACL, not the directory's mode.
func Ensure(dir, what, _ string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%s directory %s: %w", what, dir, err)
	}
	return nil
}
