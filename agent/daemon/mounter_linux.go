package daemon

import (
	"github.com/lockbox-project/lockbox/linux"
	"github.com/lockbox-project/lockbox/mounter"
)

// platformMounter is the Linux tmpfs mounter. The agent core knows it only
// as a mounter.Mounter with optional capabilities.
func platformMounter(stateDir string) (mounter.Mounter, error) {
	return linux.New(), nil
}
