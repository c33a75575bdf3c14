package agent

import (
	"github.com/lockbox-project/lockbox/linux"
	"github.com/lockbox-project/lockbox/mounter"
)

// NewPlatformMounter returns the Linux tmpfs mounter.
func NewPlatformMounter(stateDir string) (mounter.Mounter, error) {
	return linux.New(), nil
}
