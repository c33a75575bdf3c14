// Package ca is the cluster's certificate authority.
//
// It holds the root CA (ECDSA P-256), issues node certificates from a CSR and
// a join token, renews them for holders of a valid certificate, and keeps the
// set of revoked node IDs. What a certificate names (node ID = subject CN,
// role = OU, cluster = O) and the node side of a join are package pki's,
// shared with the agent.
//
// State in etcd (under /lockbox/cluster/, the prefix manager/store leaves to us):
//
//	/lockbox/cluster/id                cluster ID (plain)
//	/lockbox/cluster/ca/root           JSON {cert PEM, private key sealed by the data key}
//	/lockbox/cluster/ca/tokens         join token secrets, sealed by the data key
//	/lockbox/cluster/revoked/<node>    RFC 3339 time of revocation
//
// The private key and token secrets never reach etcd in clear: they are
// sealed by a Sealer (the cluster data key of manager/keys). The package
// knows nothing of secrets, services or the dispatcher; it does not write
// node objects (the NodeCA server reports new nodes through Registrar).
package ca
