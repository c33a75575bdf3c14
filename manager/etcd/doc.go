// Package etcd runs the etcd member a Lockbox manager keeps its state in, or
// connects to an external etcd cluster.
//
// A manager's embedded member lives in <data-dir>/etcd. Its client endpoint
// is a unix socket inside that directory (0700, so root only), never a TCP
// port; its peer endpoint is on the manager's advertised address and, when
// TLS files are given, requires mutual TLS with certificates from the
// cluster CA that name the manager host (pki.ManagerDNSName), so a worker certificate
// from the same CA cannot speak raft, and whose serial is not in the CRL
// file, so a removed manager's certificate cannot either (etcd re-reads
// that file at every accepted peer connection; manager/crl.go keeps it).
//
// The package knows nothing of Lockbox objects, keys or the CA: it starts,
// joins and stops members, changes the membership (Member.AddMember,
// PromoteMember, RemoveMember), drops the peer connections it accepted
// (DropPeerConnections, after the CRL changed), and hands its *clientv3.Client to
// manager/store, the only other package that talks to etcd.
package etcd
