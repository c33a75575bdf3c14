package claim

import (
	"path"
	"strings"
)

// Deprecated: the tmpfs placeholder goes once every adapter adds
// MountpointMounts instead.

// Placeholder is the mount the adapters add to a container's spec at
// SecretsDir when NeedsPlaceholder says so: a small empty tmpfs that holds
// no secret. The agent attaches the secrets on top of it (or inside it, for
// nested targets).
var Placeholder = struct {
	Destination, Type, Source string
}{SecretsDir, "tmpfs", "tmpfs"}

// PlaceholderOptions are the placeholder's mount options; a new slice each
// call, for the caller to keep.
func PlaceholderOptions() []string {
	return []string{"nosuid", "nodev", "noexec", "mode=0755", "size=64k"}
}

// NeedsPlaceholder reports whether a container's spec must get the
// placeholder so that the attach has a mountpoint at SecretsDir, given
// whether its root filesystem is read-only, whether it runs in a user
// namespace, and the destinations of the mounts its spec already has:
//
//   - a read-only rootfs with no mount at or above SecretsDir (other than
//     "/"): after create the root is read-only and no directory can be
//     made in it;
//   - a user-namespaced container with no mount exactly at SecretsDir: a
//     tmpfs mounted above it (runc's /run) inside the user namespace
//     belongs to that namespace, and the agent (host root, unmapped there)
//     cannot create a directory in it (EOVERFLOW). The placeholder is the
//     mountpoint itself.
//
// Otherwise the attach makes the directory it needs in the container's
// writable root (at most the directory SecretsDir, never a file).
func NeedsPlaceholder(readonlyRootfs, userns bool, mountDestinations []string) bool {
	if !readonlyRootfs && !userns {
		return false
	}
	for _, dest := range mountDestinations {
		d := path.Clean(dest)
		if d == SecretsDir {
			return false
		}
		if !userns && d != "/" && strings.HasPrefix(SecretsDir, d+"/") {
			return false
		}
	}
	return true
}
