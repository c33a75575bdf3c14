package agent

import (
	"context"
	"errors"

	"github.com/lockbox-project/lockbox/mounter"
)

// recoverMount takes back the mounts of a running container after a
// restart, so that they can be wiped when it stops, from a mounter that
// can (mounter.Recoverer).
// files are what the container's record says it holds (targets only for
// an older agent's record): the mounter starts a later live update from
// them.
func recoverMount(ctx context.Context, m mounter.Mounter, c mounter.Container, files []mounter.File) (mounter.Mount, error) {
	r, ok := m.(mounter.Recoverer)
	if !ok {
		return nil, errors.New("the mounter cannot take mounts back from a running container")
	}
	plan := &mounter.Plan{OS: mounter.Linux, Files: files}
	return r.RecoverMount(ctx, c, plan)
}

// recoverStore lets a mounter whose mounts outlive the agent in its own
// storage (mounter.StoreRecoverer) wipe the mounts of containers the agent
// has no record of, and adopts the others so that Release wipes them.
func (a *Agent) recoverStore() {
	sr, ok := a.mounter.(mounter.StoreRecoverer)
	if !ok {
		return
	}
	kept, err := sr.RecoverStore(func(id string) (bool, error) {
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
