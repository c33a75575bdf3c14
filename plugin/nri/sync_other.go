//go:build !linux

package nri

import (
	"errors"

	"github.com/containerd/nri/pkg/api"
)

// evictContainer is Linux-only: NRI runs on Linux.
func evictContainer(procRoot string, c *api.Container) error {
	return errors.New("evicting a container is supported on Linux only")
}
