// Package hotpath is what lockbox-runtime runs: the runc wrapper that
// containerd's runc shim calls in place of runc, and the OCI hook entry
// point ("lockbox-runtime hook createContainer|poststop").
//
// The wrapper parses runc's command line just enough to know the
// subcommand, the container ID, the bundle and the pid file. A "create" (or
// "run") of a container whose bundle config.json carries the annotation
// lockbox.service has the node agent make that service's secrets appear in
// the container before its process runs; a "delete" asks the agent to wipe
// them first. Every other invocation is handed to the real runc unchanged
// with execve, so a container that claims nothing pays one exec of this
// binary and one small file read per runc call.
//
// facts.go reads the facts the agent decides a claim's rules on
// (api/claimrule) from the spec's annotations, runc's --root and the
// bundle path, for the wrapper, the hook and the runtime shim alike.
//
// Every runc call of every container goes through this package, so it
// links only what that path needs: the standard library without net,
// x/sys/unix, the hand-coded agent client in agentconn, and the claim
// contract (api/claim: the annotation key, /run/secrets and the mountpoint
// rule, shared with the shim and the NRI plugin), a standard-library-only
// leaf. It must not
// import google.golang.org/protobuf, api/agent, agent/localapi, the
// runtime-spec types or anything that does (cmd/lockbox-runtime's
// TestBinaryLinksNoHeavyPackages checks the binary): their
// package initialisation made every runc call about 0.2 ms slower. It
// never touches mounts or secret bytes; the hook's attach is a function
// its caller passes in (linux.AttachHandovers).
package hotpath
