// Package localapi carries the agent's node-local protocol (api/agent): one
// protobuf message per datagram on a SOCK_SEQPACKET unix socket, with mount
// fds riding along in SCM_RIGHTS.
//
// The client half is linked into lockbox-runtime, the binary on the
// container-start hot path, so this package imports only the standard
// library, golang.org/x/sys/unix, protobuf and api/agent: no gRPC, no etcd,
// nothing of the agent's internals. The server half checks every peer with
// SO_PEERCRED and serves root only; it hands requests to a Handler and knows
// nothing of grants or mounts.
//
// On Windows the same messages travel over a named pipe
// (\\.\pipe\lockbox-agent) whose ACL admits only Administrators and
// SYSTEM, each one length-prefixed pipe message. A pipe carries no handles,
// so the Windows agent always attaches (Prepare with attach). The
// transport-neutral half (validation and dispatch to the Handler) is
// dispatch.go.
package localapi
