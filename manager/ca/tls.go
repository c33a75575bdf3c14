package ca

import (
	"crypto/tls"
	"fmt"

	"github.com/lockbox-project/lockbox/pki"
)

// The TLS configurations of managers' listeners and of their clients.

// VerifyPeer is the check every TLS handshake with a client certificate
// runs after chain verification: same cluster, a known role, not revoked.
func (c *CA) VerifyPeer(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 {
		return nil // no client certificate: only unauthenticated calls allowed
	}
	id, err := pki.IdentityFromCert(cs.VerifiedChains[0][0])
	if err != nil {
		return err
	}
	if id.ClusterID != c.ClusterID {
		return fmt.Errorf("certificate of node %s is for cluster %s", id.NodeID, id.ClusterID)
	}
	if c.IsRevoked(id.NodeID) {
		return fmt.Errorf("node %s: %w", id.NodeID, ErrRevoked)
	}
	return nil
}

// ServerTLS returns the TLS configuration of a manager's listener: its own
// certificate (asked for at every handshake, so a renewed one is used at
// once), client certificates optional (joining nodes have none yet) but
// verified against the root and checked for revocation when present.
func (c *CA) ServerTLS(own func() *tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return own(), nil
		},
		ClientAuth:       tls.VerifyClientCertIfGiven,
		ClientCAs:        c.Pool(),
		VerifyConnection: c.VerifyPeer,
	}
}
