// Package linux carries out mounter plans on Linux: one detached tmpfs per
// container, built with the new mount API, attached only inside the
// container's mount namespace, overwritten and freed when the container stops.
//
// Layout of a container's tmpfs (its root is mode 0700 and is never
// attached anywhere): one file per plan file, named by File.Name (the
// secret ID, so targets with the same base name cannot collide), with the
// grant's owner and mode. Nothing else: no directory, no link.
//
// Every target gets a single-file mount cloned from its file, as Docker
// binds each secret file: no mount ever covers a directory, /run/secrets
// included, so the container keeps whatever its image or its other mounts
// put beside its secrets (a Kubernetes service-account token under
// /var/run/secrets, a file of the image). Where the agent can write the
// container's root it makes each missing mountpoint (an empty file, and its
// directories) there, resolved inside the root; the container's writable
// layer then holds empty files only. Where it cannot (a read-only root, a
// user namespace) the adapter adds, before the runtime's create, a
// read-only bind of the agent's empty mountpoint file at every target
// (api/claim's MountpointMounts, made by EnsureMountpointSource), and the
// secret goes on top of it. A target that is the root of any other mount
// is refused (ErrMountCollision): attaching there would hide it.
//
// The mounter holds one fd per container: the detached tmpfs mount itself.
// It is read-only except while the mounter writes through it (build, the
// ownership translation for a user-namespaced container, wipe), which it
// does by flipping the mount's own read-only flag with mount_setattr. Every
// clone handed to a container is taken while it is read-only and is made
// read-only itself; mount flags are per mount, so a later flip of the
// mounter's mount never makes a container's view writable. Holding per-file
// fds open for writing instead would keep the mount busy (the read-only
// flip fails with EBUSY while a writer exists) and cost an fd per secret.
//
// Read-only holds against the container's processes with one exception
// the mounter cannot close: the kernel locks mount flags only on mounts
// copied into a less privileged namespace, not on a mount moved in, so a
// container whose user namespace owns its mount namespace and holds
// CAP_SYS_ADMIN can remount its own secrets writable (or suid, exec). It
// can change only its own secrets' bytes (each mount is a single file, so
// it can add no name); Wipe therefore overwrites each file whole, however
// long it has grown.
//
// A target on a shared mount (a volume with rshared or Bidirectional
// propagation) is refused: whatever is mounted there is copied to the
// mount's peers, which may be in the host's namespace.
//
// Every file carries a trusted.lockbox extended attribute, which only the
// initial user namespace's CAP_SYS_ADMIN can set: after an agent restart,
// Recover uses it to tell the mounts it made in a running container from
// the container's own, and takes them back to wipe.
//
// Attaching by pid enters the container's mount namespace through a pidfd
// from a locked OS thread that is never unlocked, so the runtime discards
// it; never the process's main thread, whose namespace /proc/self shows to
// the whole process and which the runtime never discards. A failed attach
// may leave the mounts it already made in the container; the caller fails
// the container's start, which tears them down with its namespace.
//
// A live update (Mount.Update, swap.go) changes a running container's
// files target by target: the new file is written under a new name in the
// tmpfs, cloned read-only and mounted beneath the container's mount at the
// target (MOVE_MOUNT_BENEATH), and the old mount, then on top, is
// detached, so the target never shows no file; it touches a target only
// while its top mount is exactly the file it put there. Old files are
// overwritten once no open file holds them, which a write lease tells
// (reclaim.go). A kernel without MOVE_MOUNT_BENEATH gets a refusal, never
// a swap that would show readers an empty target.
//
// The package is linked into lockbox-runtime, the container-start hot path:
// it imports only the standard library, golang.org/x/sys/unix and mounter.
// It knows nothing of the agent, gRPC or containerd.
package linux
