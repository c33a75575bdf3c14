// Package manager is the Lockbox manager daemon: it wires etcd, the key
// manager, the CA, the store, the dispatcher and the admin API into one
// process, and decides who may call what.
//
// A manager's data dir holds:
//
//	state.json        node ID, cluster ID, autolock, etcd peer URL (no secrets)
//	etcd/             the embedded etcd member (client socket inside, 0700)
//	certs/            the manager's node certificate and the root CA, and its key:
//	                  node.key (PEM) without autolock, node.key.sealed (sealed by
//	                  the KEK, keys.SealFile) with autolock (0600); peer.crl, the cluster's
//	                  CRL its etcd member checks peers with (crl.go)
//	kek               the key-encryption key file, without autolock (0600)
//	admin/            ca.pem; without autolock also admin credentials for TCP
//	                  (cert.pem key.pem, 0600). With autolock no admin key is
//	                  written: 'lockbox admin-credentials create' issues
//	                  short-lived ones on the admin socket.
//
// Under autolock no private key is on disk in clear: the node key (also the
// etcd peer key) is sealed by the KEK derived from the unlock key, and
// etcd reads it from a memfd. A restarted manager therefore starts neither
// etcd nor its TCP listener until 'lockbox unlock' on its admin socket
// opens the key file; an unlock-key rotation re-seals every manager's file
// (keys.Manager.OnKEKChange).
//
// Listeners: TCP (--listen) with mutual TLS serves NodeCA (no certificate
// needed to fetch the root or join with a token; rate-limited per peer
// address), Dispatcher (node certificates), Cluster (manager certificates)
// and Admin (admin certificates, not revoked, within their lifetime); the
// unix admin socket serves Admin to uid 0 only, checked with SO_PEERCRED on
// every connection. A locked manager serves nothing but Admin.Unlock. With --metrics-addr, a
// plain-HTTP listener serves Prometheus metrics on /metrics (no secret
// data, no label per node or secret; see docs/metrics.md).
//
// The package holds wiring and authorisation only: object rules live in
// manager/store and manager/admin, crypto in manager/keys and manager/ca,
// fan-out in manager/dispatcher. It never talks to etcd itself: state goes
// through manager/store, membership through manager/etcd's Member.
package manager
