//go:build !windows

package daemon

import (
	"context"

	"github.com/lockbox-project/lockbox/api/types"
)

// platformChecks has nothing to check here: on Linux secrets live in tmpfs
// and locked memory only.
func platformChecks(ctx context.Context, o Options, desc *types.NodeDescription) error {
	return nil
}
