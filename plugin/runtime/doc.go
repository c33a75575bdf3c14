// Package runtime is the logic of lockbox-runtime, the runc wrapper that
// containerd's runc shim calls in place of runc.
//
// It parses runc's command line just enough to know the subcommand, the
// container ID, the bundle and the pid file. A "create" (or "run") of a
// container whose bundle config.json carries the annotation lockbox.service
// has the node agent make that service's secrets appear in the container
// before its process runs; a "delete" asks the agent to wipe them. Every other
// invocation is handed to the real runc unchanged with execve, so a container
// that claims nothing pays one exec and one small file read.
//
// The package talks to the agent through the small Agent interface defined
// here; it never touches mounts, secret bytes, etcd or gRPC itself.
package runtime
