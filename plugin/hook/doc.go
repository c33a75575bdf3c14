// Package hook is "lockbox-runtime hook createContainer|poststop": the OCI
// hook form of Lockbox, for setups that configure hooks instead of replacing
// runc (podman and CRI-O hooks.d, NRI's hook injector, containerd's CRI
// base_runtime_spec, or oci.SpecOpts from plugin/ocispec).
//
// createContainer runs in the container's mount namespace before
// pivot_root, where the spec's root.path is the container's root (the
// working directory differs between runtimes: the rootfs under runc, the
// bundle under crun). It asks the
// agent for the container's mounts as fds (attach=false) and attaches them
// itself. poststop asks the agent to wipe them.
//
// The package reads the OCI state and config, talks to the agent and hands
// fds to the Linux attach; it never sees secret bytes.
package hook
