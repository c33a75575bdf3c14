// Package localapi carries the agent's node-local protocol (api/agent): one
// protobuf message per datagram on a SOCK_SEQPACKET unix socket, with mount
// fds riding along in SCM_RIGHTS.
//
// The client half serves the NRI plugin (lockbox-nri) and tests;
// lockbox-runtime, on the container-start hot path, does not link it (it
// uses plugin/runtime/agentconn, which encodes its two requests by hand).
// The package imports only the standard library, golang.org/x/sys/unix,
// protobuf, api/agent, api/validation, agent/errdefs and internal/steptrace
// (the phase benchmark's trace, a nil check when off): no gRPC, no etcd,
// nothing of the agent's internals. The server half checks every peer with
// SO_PEERCRED and serves root only; it hands requests to a Handler, maps
// its domain errors onto wire codes (WireError), and knows nothing of
// grants or mounts.
//
// On Windows the same messages travel over a named pipe
// (\\.\pipe\lockbox-agent) whose ACL admits only Administrators and
// SYSTEM, each one length-prefixed pipe message. A pipe carries no handles,
// so the Windows agent always attaches (Prepare with attach). The
// transport-neutral half (validation and dispatch to the Handler) is
// dispatch.go.
package localapi
