// Package mounter turns a container's grants into a plan — which files, at
// which targets, with which owner and mode — and defines the Mounter that
// platform packages (linux, windows) implement to carry a plan out.
//
// It is pure: it knows nothing of gRPC, containerd, OCI bundles or any
// system call, so that every rule it enforces is tested and fuzzed alone.
package mounter
