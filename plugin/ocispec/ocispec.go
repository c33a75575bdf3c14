// Package ocispec holds containerd Go-client spec options for Lockbox:
// claim a service, (for setups without lockbox-runtime as the runc binary)
// add Lockbox's OCI hooks, give a container whose root the agent cannot
// write the mountpoints of its secrets, and give a Windows container its
// secrets mount.
// It is the one place the containerd client packages meet Lockbox's node
// code: the mounters (linux, windows) link none of them.
//
// It only edits the OCI spec; it never talks to the agent (the targets
// WithMountpoints takes come from the caller's agent client).
package ocispec

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lockbox-project/lockbox/api/claim"
)

// WithService makes the container claim service: with lockbox-runtime as
// the runc binary (or the NRI plugin, or the hooks), it starts with the
// service's secrets, or not at all.
func WithService(service string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if service == "" {
			return errors.New("lockbox: empty service name")
		}
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[claim.ServiceAnnotation] = service
		return nil
	}
}

// WithHooks adds "path hook createContainer" and "path hook poststop" (path
// is the lockbox-runtime binary) to the spec, for runtimes that are plain
// runc or crun. env is passed to the hooks (for instance
// LOCKBOX_AGENT_SOCKET=...). The hooks do nothing for a container that
// claims no service.
func WithHooks(path string, env ...string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if path == "" {
			return errors.New("lockbox: empty hook path")
		}
		if s.Hooks == nil {
			s.Hooks = &specs.Hooks{}
		}
		s.Hooks.CreateContainer = append(s.Hooks.CreateContainer, specs.Hook{
			Path: path, Args: []string{"lockbox-runtime", "hook", "createContainer"}, Env: env,
		})
		s.Hooks.Poststop = append(s.Hooks.Poststop, specs.Hook{
			Path: path, Args: []string{"lockbox-runtime", "hook", "poststop"}, Env: env,
		})
		return nil
	}
}

// WithMountpoints adds, for every target, a read-only bind of the agent's
// empty mountpoint file (claim.MountpointMounts), so that the runtime makes
// the target's file and directories before the root turns read-only; the
// agent attaches each secret on top of it after the create. A container
// needs them when claim.NeedsMountpoints says so (a read-only root, a user
// namespace) and it is created by a plain runc with Lockbox's hooks or
// attached by pid after the create; containerd-shim-lockbox-v2 and
// lockbox-runtime add them themselves. The targets are the agent's answer
// for the claim: agent/localapi's Client.Targets, which refuses a claim the
// agent could not serve. A target that would hide a mount the spec
// already has (claim.Collision) is refused.
func WithMountpoints(targets ...string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		have := make([]claim.Mount, len(s.Mounts))
		for i, m := range s.Mounts {
			have[i] = claim.Mount{Destination: m.Destination, Type: m.Type, Source: m.Source, Options: m.Options}
		}
		if t, m, ok := claim.Collision(targets, have); ok {
			return fmt.Errorf("lockbox: secret target %s collides with the mount at %s the container already has; choose another target", t, m)
		}
		for _, m := range claim.MountpointMounts(targets) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: m.Destination, Type: m.Type, Source: m.Source, Options: m.Options})
		}
		return nil
	}
}
