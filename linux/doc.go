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
// The mounter keeps two mounts of the tmpfs: the read-only one that every
// attached clone derives from, and a private writable view (never attached)
// through which Wipe overwrites and truncates the files, and through which
// ownership is translated for user-namespaced containers. Holding open file
// descriptors for writing instead would keep the mount busy and make the
// read-only flip fail with EBUSY.
//
// The package is linked into lockbox-runtime, the container-start hot path:
// it imports only the standard library, golang.org/x/sys/unix and mounter.
// It knows nothing of the agent, gRPC or containerd.
package linux
