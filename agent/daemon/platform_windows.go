package daemon

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/windows"
)

// platformChecks looks at what Windows needs before secrets arrive: on
// Windows a running container's secrets sit in files under the state
// directory, so its volume should be BitLocker-protected (docs/windows.md).
func platformChecks(ctx context.Context, o Options, desc *types.NodeDescription) error {
	dir, err := filepath.Abs(o.StateDir)
	if err != nil {
		return err
	}
	protected, err := windows.BitLockerProtected(ctx, dir)
	if err != nil {
		o.Log.Warn("cannot tell whether the state volume is BitLocker-protected", "state_dir", dir, "err", err)
	}
	if protected {
		return nil
	}
	msg := fmt.Sprintf("the volume of the state directory %s is not BitLocker-protected: secrets of running containers are on it in clear", dir)
	if o.RequireBitLocker {
		return errors.New(msg + " (--require-bitlocker)")
	}
	o.Log.Warn(msg)
	desc.Warnings = append(desc.Warnings, msg)
	return nil
}
