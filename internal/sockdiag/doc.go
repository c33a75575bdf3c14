// Package sockdiag closes established TCP connections through the kernel's
// sock_diag netlink interface (SOCK_DESTROY, what `ss -K` does): the only
// way to end connections that a library accepted and keeps to itself.
//
// The manager uses it on its embedded etcd member's peer port: etcd checks
// the peer CRL only when it accepts a connection, so after a manager is
// removed every connection accepted before is dropped, and each peer
// handshakes again against the new CRL.
//
// It needs CAP_NET_ADMIN and a kernel built with CONFIG_INET_DIAG_DESTROY;
// without them it says so (ErrUnsupported, or the kernel's error). It
// knows nothing of etcd or certificates.
package sockdiag
