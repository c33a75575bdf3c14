package agent

import (
	"github.com/lockbox-project/lockbox/mounter"
	"github.com/lockbox-project/lockbox/windows"
)

// NewPlatformMounter returns the Windows mounter, which keeps its private
// secrets directories under the state directory.
func NewPlatformMounter(stateDir string) (mounter.Mounter, error) {
	return windows.New(stateDir)
}
