//go:build !linux && !windows

package daemon

import (
	"errors"

	"github.com/lockbox-project/lockbox/mounter"
)

func platformMounter(stateDir string) (mounter.Mounter, error) {
	return nil, errors.New("lockbox agent: no secrets mounter on this platform (Linux and Windows only)")
}
