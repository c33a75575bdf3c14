package agent

import (
	"context"
	"errors"

	"github.com/lockbox-project/lockbox/linux"
	"github.com/lockbox-project/lockbox/mounter"
)

// NewPlatformMounter returns the Linux tmpfs mounter.
func NewPlatformMounter(stateDir string) (mounter.Mounter, error) {
	return linux.New(), nil
}

// recoverMount takes back the mounts of a running container after a
// restart, so that they can be wiped when it stops.
func recoverMount(ctx context.Context, m mounter.Mounter, c mounter.Container, targets []string) (mounter.Mount, error) {
	lm, ok := m.(*linux.Mounter)
	if !ok {
		return nil, errors.New("the mounter cannot recover mounts")
	}
	plan := &mounter.Plan{OS: mounter.Linux}
	for _, t := range targets {
		plan.Files = append(plan.Files, mounter.File{Target: t})
	}
	return lm.Recover(ctx, c, plan)
}

// recoverPlatform has nothing to add on Linux: each record is recovered
// by itself (recoverMount).
func (a *Agent) recoverPlatform() {}
