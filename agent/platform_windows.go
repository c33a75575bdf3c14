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

// recoverPlatform lets the Windows mounter wipe the directories of
// containers the agent has no record of, and adopts the others so that
// Release wipes them.
func (a *Agent) recoverPlatform() {
	wm, ok := a.mounter.(*windows.Mounter)
	if !ok {
		return
	}
	kept, err := wm.Recover(func(id string) (bool, error) {
		_, ok := a.held[id]
		return ok, nil
	})
	if err != nil {
		a.log.Warn("recover secrets directories", "err", err)
	}
	for id, m := range kept {
		if h := a.held[id]; h != nil {
			h.mount = m
		}
	}
}
