// Package ca is the cluster's certificate authority and the source of node
// identity.
//
// It holds the root CA (ECDSA P-256), issues node certificates from a CSR and
// a join token, renews them for holders of a valid certificate, keeps the set
// of revoked node IDs, signs the CRL that etcd's peer port checks, and turns
// a verified TLS peer into an Identity (node ID = subject CN, role = OU,
// cluster = O). The NodeCA gRPC service (server.go) is its edge.
//
// Files by job: root.go and crl.go are x509 only (root, signing, CSRs,
// CRLs); tls.go the managers' TLS configurations; tokens.go the join
// tokens (a manager token is single-use, a worker token reusable until
// rotated); revocations.go the revoked set, issued serials and the CRL;
// ca.go opening the CA and issuing.
//
// State lives in manager/store's cluster table (the store owns the key
// layout; this package makes no etcd call): the cluster ID, the root
// certificate with its key sealed by the data key, the sealed join token
// secrets, the revoked node IDs, the serial of every certificate issued to
// a node (recorded before the certificate is handed out, refused once the
// node is revoked), and the CRL (DER, signed by the root) listing every
// serial of every revoked node. Managers follow the revocations through
// the store, so a node revoked through any manager is refused by all, and
// each manager writes the CRL to its data dir for its etcd member (see
// manager/crl.go): a locked manager, which cannot sign, still gets it.
//
// The private key and token secrets never reach the store in clear: they
// are sealed by a Sealer (the cluster data key of manager/keys), bound to
// their record by the associated data the store names for it, so a sealed
// value copied into another record, or an earlier generation of the
// tokens put back after a rotation, does not open (tokens.go says how).
// Values sealed before the binding open once and are written back bound. The
// package knows nothing of secrets, services or the dispatcher; it does
// not write node objects (the NodeCA server reports new nodes through
// Registrar).
package ca
