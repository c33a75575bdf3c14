package daemon

import (
	"fmt"
	"os"
)

// stateDir makes the state directory if it is missing; on Windows its
// protection is its ACL and the volume's BitLocker (platformChecks).
func stateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	return nil
}
