//go:build !linux && !windows

package shimproxy

import (
	"context"
	"errors"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"

	"github.com/lockbox-project/lockbox/plugin/runtime/hotpath"
)

// otherPlatform refuses claims: there is no Lockbox mounter here.
type otherPlatform struct{}

func defaultPlatform() platform { return otherPlatform{} }

var errUnsupported = errors.New("lockbox secrets are served on Linux and Windows only")

func (otherPlatform) beforeCreate(context.Context, agentClient, *hotpath.Claim, *taskAPI.CreateTaskRequest) error {
	return errUnsupported
}

func (otherPlatform) afterCreate(context.Context, agentClient, *hotpath.Claim, *taskAPI.CreateTaskRequest, uint32) error {
	return errUnsupported
}
