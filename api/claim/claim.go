// Package claim is the contract by which a container claims a service,
// as every adapter (lockbox-runtime and its hooks, the runtime shim, the NRI
// plugin, the containerd Go-client spec options) and the mounter read it:
// the annotation key, the default secrets directory, and when and how a
// container's spec gets a mountpoint for each secret file.
//
// It imports only the standard library: lockbox-runtime's hot path links
// it. It never talks to the agent and knows nothing of OCI spec types.
package claim

import (
	"path"
	"strings"
)

// ServiceAnnotation is the OCI annotation (for CRI: the pod or container
// annotation) by which a container names the service it claims.
const ServiceAnnotation = "lockbox.service"

// SecretsDir is where a Linux container finds its secrets: a reference with
// no target gets SecretsDir/<name>, a relative target is under it.
const SecretsDir = "/run/secrets"

// MountpointSource is the agent's empty mountpoint file on the host: a
// root-owned, read-only (0444), empty regular file that the agent creates
// at start. An adapter that must have the runtime make a secret's
// mountpoint (NeedsMountpoints) bind-mounts it, read-only, at every target
// of the claim (MountpointMounts); the agent attaches the secret file on top
// of that bind after the runtime's create, and recognises the bind as its
// own by this file's device and inode. It is not under the agent socket's
// directory, which is root-only (0700): runc opens a bind's source from
// inside a user-namespaced container on some versions.
const MountpointSource = "/run/lockbox-mountpoint"

// NeedsMountpoints reports whether the adapter must add a mountpoint bind
// (MountpointMounts) for every target to a container's spec before the
// runtime's create, given whether its root filesystem is read-only and
// whether it runs in a user namespace:
//
//   - a read-only rootfs: after create the root is read-only and no
//     mountpoint can be made in it; the runtime makes the mountpoints of
//     the spec's mounts (files and directories) before it turns the root
//     read-only, as Docker's secrets rely on;
//   - a user namespace: a tmpfs mounted inside the user namespace (runc's
//     /run) belongs to it, and the agent (host root, unmapped there) cannot
//     create a file in it (EOVERFLOW).
//
// Otherwise the agent makes each missing mountpoint (an empty file and its
// directories) in the container's writable root after the create.
func NeedsMountpoints(readonlyRootfs, userns bool) bool {
	return readonlyRootfs || userns
}

// Mount is one mount an adapter adds to a container's spec, in the OCI
// spec's terms.
type Mount struct {
	Destination, Type, Source string
	Options                   []string
}

// MountpointMounts returns the mounts that give each target its
// mountpoint: a read-only bind of MountpointSource, an empty file, so that
// the runtime creates the file (and its directories) before the root turns
// read-only. Nothing of the image is hidden beyond the target file itself.
// Each call returns new slices, for the caller to keep.
func MountpointMounts(targets []string) []Mount {
	ms := make([]Mount, len(targets))
	for i, t := range targets {
		ms[i] = Mount{
			Destination: t,
			Type:        "bind",
			Source:      MountpointSource,
			Options:     []string{"bind", "ro", "nosuid", "nodev", "noexec"},
		}
	}
	return ms
}

// Collision returns a target that would hide a mount a container's spec
// already has, and that mount's destination: a target at the destination
// of any mount, or under the destination of a bind mount (a volume: the
// target's mountpoint would be made in it, or cover one of its files, such
// as Kubernetes' service-account token). ok is false when there is none.
// The adapters that add MountpointMounts check this first, since the
// runtime would cover such a mount before the agent could see it. A bind
// of MountpointSource is Lockbox's own and never collides. /var/run is
// taken for /run, as in the images where it links there (Debian, Ubuntu,
// Alpine), where Kubernetes' /var/run/secrets lies under SecretsDir.
func Collision(targets []string, mounts []Mount) (target, mount string, ok bool) {
	for _, t := range targets {
		t = runAlias(path.Clean(t))
		for _, m := range mounts {
			if m.Source == MountpointSource {
				continue
			}
			d := runAlias(path.Clean(m.Destination))
			if d == t || (isBind(m) && d != "/" && strings.HasPrefix(t, d+"/")) {
				return t, m.Destination, true
			}
		}
	}
	return "", "", false
}

func runAlias(p string) string {
	if p == "/var/run" || strings.HasPrefix(p, "/var/run/") {
		return p[len("/var"):]
	}
	return p
}

// isBind reports whether m is a bind mount, by its type or its options
// (runc binds any mount with a "bind" or "rbind" option).
func isBind(m Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}
