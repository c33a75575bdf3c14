// Package pki is the node side of the cluster PKI, shared by workers,
// managers and the admin CLI: what every holder of a cluster certificate
// does with it, whatever its role.
//
// It holds the roles and the identity a verified certificate names
// (node ID = subject CN, role = OU, cluster = O), the one DNS name every
// manager certificate carries (ManagerDNSName), the one client TLS
// configuration for dialling managers, the download of the root CA pinned
// by a join token's digest, CSR generation, and the join call that trades a
// token and a CSR for a certificate. Join tokens themselves are formatted
// and parsed by pki/jointoken.
//
// It signs nothing, holds no CA key, and knows no etcd: issuing,
// renewing and revoking are manager/ca's. The agent links it without
// linking anything under manager/.
package pki
