package manager

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/lockbox-project/lockbox/internal/atomicfile"
	"github.com/lockbox-project/lockbox/internal/identity"
	"github.com/lockbox-project/lockbox/manager/admin"
	"github.com/lockbox-project/lockbox/manager/ca"
	"github.com/lockbox-project/lockbox/pki"
)

// writeInitAdminCredentials writes DATA/admin at init: the root CA always;
// without autolock also an admin certificate and key for TCP (the KEK file
// beside them opens everything anyway). Under autolock no admin key is
// left on disk: short-lived admin credentials are issued on demand over
// the root-only admin socket ('lockbox admin-credentials create').
func (m *Manager) writeInitAdminCredentials(root *ca.Root) error {
	if err := atomicfile.WriteFile(m.path(adminDir, adminRootFile), root.CertPEM, 0o600); err != nil {
		return err
	}
	if m.cfg.Autolock {
		return nil
	}
	adminID := identity.NewID()
	creds, err := root.NewKeyPair(ca.CertRequest{NodeID: admin.AdminIDPrefix + adminID[:12], Role: pki.RoleAdmin})
	if err != nil {
		return err
	}
	defer clear(creds.KeyPEM)
	for name, data := range map[string][]byte{adminCertFile: creds.CertPEM, adminKeyFile: creds.KeyPEM} {
		if err := atomicfile.WriteFile(m.path(adminDir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// adminCreds is manager/admin's AdminCredentialer: short-lived admin
// certificates, revoked by ID through the cluster's revocation list (which
// every manager's TLS handshake checks).
type adminCreds struct{ m *Manager }

func (a adminCreds) IssueAdmin(ctx context.Context, lifetime time.Duration) (admin.AdminCredentials, error) {
	id := identity.NewID()
	c := a.m.ca()
	kp, err := c.IssueKeyPair(ctx, ca.CertRequest{NodeID: admin.AdminIDPrefix + id[:12], Role: pki.RoleAdmin, Validity: lifetime})
	if err != nil {
		return admin.AdminCredentials{}, err
	}
	leaf, err := parsePEMCert(kp.CertPEM)
	if err != nil {
		clear(kp.KeyPEM)
		return admin.AdminCredentials{}, err
	}
	a.m.log.Info("admin credentials issued", "id", leaf.Subject.CommonName, "not_after", leaf.NotAfter)
	return admin.AdminCredentials{ID: leaf.Subject.CommonName, CertPEM: kp.CertPEM, KeyPEM: kp.KeyPEM, RootPEM: c.CertPEM, NotAfter: leaf.NotAfter}, nil
}

func (a adminCreds) RevokeAdmin(ctx context.Context, id string) error {
	if err := a.m.ca().Revoke(ctx, id); err != nil {
		return err
	}
	a.m.log.Info("admin credentials revoked", "id", id)
	return nil
}

// retireClearAdminKey: a data dir of a version that wrote admin
// credentials at init under autolock too holds a long-lived admin key in
// clear. Under autolock that certificate is revoked (on every manager) and
// its files removed; the operator issues short-lived ones instead.
func (m *Manager) retireClearAdminKey(ctx context.Context) {
	keyPath, certPath := m.path(adminDir, adminKeyFile), m.path(adminDir, adminCertFile)
	if _, err := os.Stat(keyPath); err != nil {
		return
	}
	id := ""
	if certPEM, err := os.ReadFile(certPath); err == nil {
		if cert, err := parsePEMCert(certPEM); err == nil && strings.HasPrefix(cert.Subject.CommonName, admin.AdminIDPrefix) {
			id = cert.Subject.CommonName
			if err := m.ca().Revoke(ctx, id); err != nil {
				m.log.Warn("autolock: cannot revoke the admin certificate left with its key in clear; will retry at the next start", "id", id, "err", err)
				return
			}
		}
	}
	for _, p := range []string{keyPath, certPath} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			m.log.Warn("autolock: cannot remove the admin credentials left in clear", "file", p, "err", err)
		}
	}
	m.log.Warn("autolock: the admin key an earlier version left in clear is revoked and removed; issue short-lived credentials with 'lockbox admin-credentials create --dir DIR'", "id", id)
}
