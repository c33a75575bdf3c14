// Package manager is the Lockbox manager daemon: it wires etcd, the key
// manager, the CA, the store, the dispatcher and the admin API into one
// process, and decides who may call what.
//
// A manager's data dir holds:
//
//	state.json        node ID, cluster ID, autolock, etcd peer URL (no secrets)
//	etcd/             the embedded etcd member (client socket inside, 0700)
//	certs/            the manager's own node certificate, key and the root CA (0600), and
//	                  peer.crl, the cluster's CRL its etcd member checks peers with (crl.go)
//	kek               the key-encryption key file, without autolock (0600)
//	admin/            admin client credentials for TCP: ca.pem cert.pem key.pem (0600)
//
// Listeners: TCP (--listen) with mutual TLS serves NodeCA (no certificate
// needed to fetch the root or join with a token), Dispatcher (node
// certificates), Cluster (manager certificates) and Admin (admin
// certificates); the unix admin socket serves Admin to uid 0 only, checked
// with SO_PEERCRED on every connection. A manager with autolock serves
// nothing but Admin.Unlock until it is unlocked. With --metrics-addr, a
// plain-HTTP listener serves Prometheus metrics on /metrics (no secret
// data, no label per node or secret; see docs/metrics.md).
//
// The package holds wiring and authorisation only: object rules live in
// manager/store and manager/admin, crypto in manager/keys and manager/ca,
// fan-out in manager/dispatcher. It never talks to etcd itself: state goes
// through manager/store, membership through manager/etcd's Member.
package manager
