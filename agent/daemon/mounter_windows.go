package daemon

import (
	"github.com/lockbox-project/lockbox/mounter"
	"github.com/lockbox-project/lockbox/windows"
)

// platformMounter is the Windows mounter, which keeps its private secrets
// directories under the state directory.
func platformMounter(stateDir string) (mounter.Mounter, error) {
	return windows.New(stateDir)
}
