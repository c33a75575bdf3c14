// Package windows is the Windows Mounter: it carries out a mounter.Plan for
// a Windows container, where there is no RAM disk to hold secrets.
//
// Build writes one file per grant into a fresh directory under the agent's
// state directory whose ACL grants only Administrators and SYSTEM. The
// container gets that directory as one read-only mount at
// mounter.WindowsInternalSecretsDir (plugin/ocispec.WithSecretsMount, for containerd Go-client users), and Attach makes
// each target a symbolic link into it, created inside the container's root
// filesystem and resolved so that it cannot land outside it. Update (a
// live update, mounter.Updater) changes a running container's files in
// that directory, under the names its links point at: a new file renamed
// over the old one in one call, the old one kept by a second name until no
// reader holds it, then overwritten. Wipe overwrites every file and
// removes the directory; Recover removes what containers that no longer
// exist left behind, and gives back the others' mounts, updatable from
// the index each keeps. BitLockerProtected tells
// the agent whether the state volume is encrypted at rest.
//
// The package touches only its own directory under the state dir and the
// targets inside a container's root filesystem. It knows nothing of the
// agent's API, gRPC, containerd (it links no containerd package: the
// Go-client spec option lives in plugin/ocispec) or the control plane. The path rules (targets, reserved
// names) live in package mounter; the files named *_windows.go do the
// system calls, the rest is pure and tested on every platform.
package windows
