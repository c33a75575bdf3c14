package mounter

import (
	"context"
	"errors"
	"os"
)

// ErrMountCollision is returned (wrapped) when a target's mountpoint is
// already a mount in the container, or a file of one (a volume, a
// Kubernetes service-account token), other than the mountpoint the
// adapters add for Lockbox: attaching a secret there would hide what the
// container was given. It is the container's configuration, not a fault.
var ErrMountCollision = errors.New("collides with a mount the container already has; choose another target")

// SecretSource hands a mounter the bytes of a secret while it writes them.
// The slice is only valid during the call to fn and must not be retained:
// it is backed by the agent's locked memory.
type SecretSource interface {
	WithSecret(secretID string, fn func(data []byte) error) error
}

// Container says where a plan is attached.
type Container struct {
	ID string
	// Pid is a process in the container's mount namespace. Zero means the
	// caller is already in that namespace.
	Pid int
	// Rootfs is the container's root as seen from the mount namespace the
	// attach happens in.
	Rootfs         string
	ReadonlyRootfs bool
	UIDMappings    []IDMapping
	GIDMappings    []IDMapping
}

// IDMapping is one line of a user-namespace uid or gid map.
type IDMapping struct {
	ContainerID uint32
	HostID      uint32
	Size        uint32
}

// Mounter materialises plans on one platform.
type Mounter interface {
	// Build writes the plan's files into private storage that no container
	// sees yet (a detached tmpfs on Linux, an ACL'd directory on Windows).
	Build(ctx context.Context, plan *Plan, src SecretSource) (Mount, error)
}

// Mount is one built plan, held by the agent until the container stops.
type Mount interface {
	// Attach makes the files appear at their targets inside c.
	Attach(ctx context.Context, c Container) error
	// Wipe overwrites every file, removes it and frees the storage. It is
	// safe to call more than once.
	Wipe() error
}

// The capabilities below are optional: a platform's Mounter or Mount has
// those it can, and callers find them by type assertion, so that no
// platform carries methods it cannot honour and the caller names no
// platform.

// Handoverer is a Mount that can give its mounts out as detached mounts
// for a caller already in the container's mount namespace to attach (the
// Linux tmpfs).
type Handoverer interface {
	Handover(c Container) ([]Handover, error)
}

// Recoverer is a Mounter that can take back, after an agent restart, the
// mounts it made in c, a container that still runs, so that they can be
// wiped when it stops (Linux: they live on in the container's mount
// namespace). plan's files say what the container holds at each target
// (its targets alone are enough to wipe). The returned Mount cannot be
// handed over again; it can be wiped and, where it is an Updater, updated.
type Recoverer interface {
	RecoverMount(ctx context.Context, c Container, plan *Plan) (Mount, error)
}

// StoreRecoverer is a Mounter whose mounts outlive the agent in its own
// storage (Windows: directories under the state directory). At agent start
// RecoverStore wipes what belongs to no container that exists, and returns
// the others' mounts by container ID. exists says whether a container
// still exists; when it fails, the container's mount is kept.
type StoreRecoverer interface {
	RecoverStore(exists func(containerID string) (bool, error)) (map[string]Mount, error)
}

// Handover is one mount a process already in the container's mount namespace
// (an OCI createContainer hook) attaches itself: File is a detached mount
// (on Linux, a read-only clone made by open_tree) to be moved onto Target, an
// absolute path inside the container's root. The receiver owns File and
// closes it once it is attached; each Handover can be attached once.
type Handover struct {
	Target string
	// Secret names the secret whose file File is, for errors; empty when
	// the receiver does not know it (a hook gets targets only).
	Secret string
	File   *os.File
}
