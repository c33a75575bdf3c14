package manager

import (
	"github.com/lockbox-project/lockbox/manager/ca"
)

// writeInitAdminCredentials writes DATA/admin at init: the root CA always;
// without autolock also an admin certificate and key for TCP (the KEK file
// beside them opens everything anyway). Under autolock no admin key is
// left on disk: short-lived admin credentials are issued on demand over
// the root-only admin socket ('lockbox admin-credentials create').
func (m *Manager) writeInitAdminCredentials(root *ca.Root) error {
	if err := writeFileAtomic(m.path(adminDir, adminRootFile), root.CertPEM, 0o600); err != nil {
		return err
	}
	if m.cfg.Autolock {
		return nil
	}
	adminID, err := ca.NewID()
	if err != nil {
		return err
	}
	creds, err := root.NewKeyPair(ca.CertRequest{NodeID: "admin-" + adminID[:12], Role: ca.RoleAdmin})
	if err != nil {
		return err
	}
	defer clear(creds.KeyPEM)
	for name, data := range map[string][]byte{adminCertFile: creds.CertPEM, adminKeyFile: creds.KeyPEM} {
		if err := writeFileAtomic(m.path(adminDir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}
