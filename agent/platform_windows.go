package agent

import (
	"context"
	"errors"

	"github.com/lockbox-project/lockbox/mounter"
	"github.com/lockbox-project/lockbox/windows"
)

// NewPlatformMounter returns the Windows mounter, which keeps its private
// secrets directories under the state directory.
func NewPlatformMounter(stateDir string) (mounter.Mounter, error) {
	return windows.New(stateDir)
}

// recoverMount is not needed on Windows: the Windows mounter's own Recover
// finds its directories under the state directory.
func recoverMount(ctx context.Context, m mounter.Mounter, c mounter.Container, targets []string) (mounter.Mount, error) {
	return nil, errors.New("recover: not on windows")
}
