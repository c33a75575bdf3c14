package shimproxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/mount"

	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/plugin/claimrecord"
	"github.com/lockbox-project/lockbox/plugin/runtime/hotpath"
	"github.com/lockbox-project/lockbox/windows"
)

// rootfsDirName is where, in the bundle, the proxy mounts the container's
// layers for the agent to make its links in, before the inner create.
const rootfsDirName = "lockbox-rootfs"

// windowsPlatform is the Windows side (docs/windows.md): everything
// happens before the inner create, because the secrets directory must be
// in the spec when runhcs creates the container, and only the agent's
// prepare makes it. The proxy mounts the container's layers (its scratch
// layer takes the links), has the agent build the files and link the
// targets (attach), unmounts, finds the directory the agent built for the
// container and adds it to the spec as the read-only internal secrets
// mount. Nothing is left to do after the create.
type windowsPlatform struct {
	// stateDir is the agent's --state-dir.
	stateDir string
	// mountRootfs mounts the container's layers at target and returns
	// how to unmount them (core/mount; a fake in tests: wine has no
	// layers).
	mountRootfs func(mounts []*types.Mount, target string) (func() error, error)
	// findSource is windows.MountSource.
	findSource func(stateDir, containerID string) (string, error)
}

func defaultPlatform() platform {
	return windowsPlatform{stateDir: AgentStateDir(os.Getenv), mountRootfs: mountLayers, findSource: windows.MountSource}
}

// defaultAgentStateDir is `lockbox agent`'s --state-dir default, made
// absolute on the current drive as the agent makes it.
const defaultAgentStateDir = "/var/lib/lockbox/agent"

// AgentStateDir is the agent's state directory as the Windows proxy finds
// it: LOCKBOX_STATE_DIR, else the agent's default. Set it in containerd's
// environment when the agent runs with another --state-dir.
func AgentStateDir(getenv func(string) string) string {
	d := getenv("LOCKBOX_STATE_DIR")
	if d == "" {
		d = defaultAgentStateDir
	}
	if abs, err := filepath.Abs(d); err == nil {
		return abs
	}
	return d
}

func (p windowsPlatform) beforeCreate(ctx context.Context, ag agentClient, c *hotpath.Claim, r *taskAPI.CreateTaskRequest) error {
	// Recorded before the agent holds anything: a proxy that dies from
	// here on leaves the manager's Stop what to release.
	if err := claimrecord.Write(r.Bundle, claimrecord.Record{ID: r.ID, Service: c.Service}); err != nil {
		return err
	}
	root, unmount, err := p.rootfs(c, r)
	if err != nil {
		return err
	}
	ctr := toAgentContainer(c.Container(r.ID, 0, root))
	ctr.Os = "windows"
	err = prepareAttached(ctx, ag, &agent.PrepareRequest{Attach: true, Container: ctr})
	if uerr := unmount(); uerr != nil {
		err = errors.Join(err, fmt.Errorf("unmount the container's layers: %w", uerr))
	}
	if err != nil {
		return err
	}
	src, err := p.findSource(p.stateDir, r.ID)
	if err != nil {
		return err
	}
	return addSecretsMount(ctx, r.Bundle, src)
}

func (windowsPlatform) afterCreate(context.Context, agentClient, *hotpath.Claim, *taskAPI.CreateTaskRequest, uint32) error {
	return nil
}

// rootfs returns the container's root as a host path for the agent's
// links: its layers mounted in the bundle, or, when containerd sent no
// mounts, the spec's root path (a directory prepared by the caller).
func (p windowsPlatform) rootfs(c *hotpath.Claim, r *taskAPI.CreateTaskRequest) (string, func() error, error) {
	if len(r.Rootfs) == 0 {
		root := c.RootPath
		if root == "" {
			return "", nil, errors.New("the container has no root filesystem to link its secrets into")
		}
		if !filepath.IsAbs(root) {
			root = filepath.Join(r.Bundle, root)
		}
		return root, func() error { return nil }, nil
	}
	target := filepath.Join(r.Bundle, rootfsDirName)
	if err := os.MkdirAll(target, 0o700); err != nil {
		return "", nil, err
	}
	unmount, err := p.mountRootfs(r.Rootfs, target)
	if err != nil {
		os.Remove(target)
		return "", nil, fmt.Errorf("mount the container's layers: %w", err)
	}
	return target, func() error {
		if err := unmount(); err != nil {
			return err
		}
		return os.Remove(target)
	}, nil
}

// mountLayers mounts containerd's rootfs mounts (windows-layer: the
// scratch layer over the image's) at target, as containerd does for its
// own use (core/mount, with the bind filter).
func mountLayers(mounts []*types.Mount, target string) (func() error, error) {
	ms := mount.FromProto(mounts)
	if err := mount.All(ms, target); err != nil {
		return nil, err
	}
	return func() error { return mount.UnmountMounts(ms, target, 0) }, nil
}
