package daemon

import (
	"github.com/lockbox-project/lockbox/linux"
	"github.com/lockbox-project/lockbox/mounter"
)

// platformMounter is the Linux tmpfs mounter. The agent core knows it only
// as a mounter.Mounter with optional capabilities. It first makes the
// agent's empty mountpoint file (api/claim's MountpointSource), which the
// adapters bind at the targets of containers whose root the agent cannot
// write: a file already there that is not a root-owned, read-only, empty
// regular file is replaced.
func platformMounter(stateDir string) (mounter.Mounter, error) {
	if err := linux.EnsureMountpointSource(mounter.LinuxMountpointSource); err != nil {
		return nil, err
	}
	return linux.New(), nil
}
