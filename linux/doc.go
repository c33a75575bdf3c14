// Package linux carries out mounter plans on Linux: one detached tmpfs per
// container, built with the new mount API, attached only inside the
// container's mount namespace, overwritten and freed when the container stops.
//
// Layout of a container's tmpfs (its root is mode 0700 and is never
// attached anywhere):
//
//	<name>               one file per plan file, named by File.Name (the
//	                     secret ID), with the grant's owner and mode
//	secrets/<rel target> hard links to those files for every target under
//	                     /run/secrets, with the directories they need
//
// The secrets/ subtree is attached as a whole at /run/secrets, as Docker
// does: the container sees only its secrets there, the container's writable
// layer gets at most the /run/secrets directory (never one placeholder file
// per secret, so a commit of the container holds nothing of them), a
// read-only rootfs needs one placeholder, and a container with many secrets
// costs one mount, not one per secret. Targets outside /run/secrets get a
// single-file bind mount cloned from the file by ID. Hard links share the
// inode, so ownership, mode and the wipe apply to both names at once.
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
// can change only its own secrets; Wipe therefore overwrites and removes
// whatever it finds in the tmpfs, not just what the plan put there.
//
// A target on a shared mount (a volume with rshared or Bidirectional
// propagation) is refused: whatever is mounted there is copied to the
// mount's peers, which may be in the host's namespace.
//
// The secrets/ directory and every single-file mount's root carry a
// trusted.lockbox extended attribute, which only the initial user
// namespace's CAP_SYS_ADMIN can set: after an agent restart, Recover uses it
// to tell the mounts it made in a running container from the container's
// own, and takes them back to wipe.
//
// Attaching by pid enters the container's mount namespace through a pidfd
// from a locked OS thread that is never unlocked, so the runtime discards
// it; never the process's main thread, whose namespace /proc/self shows to
// the whole process and which the runtime never discards. A failed attach
// may leave the mounts it already made in the container; the caller fails
// the container's start, which tears them down with its namespace.
//
// The package is linked into lockbox-runtime, the container-start hot path:
// it imports only the standard library, golang.org/x/sys/unix and mounter.
// It knows nothing of the agent, gRPC or containerd.
package linux
