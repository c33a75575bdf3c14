package manager

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/lockbox-project/lockbox/internal/atomicfile"
	"github.com/lockbox-project/lockbox/manager/ca"
	"github.com/lockbox-project/lockbox/manager/store"
)

// The etcd peer CRL: etcd's peer port accepts any certificate of the
// cluster CA that names the manager host, so a removed manager's
// certificate is refused only because its serials are in the CRL file the
// member re-reads at every connection. The CRL lives in the store (signed
// by whichever manager revoked); every manager, locked or not, copies it
// to its data dir whenever it changes, and, when the new CRL revokes more,
// drops the peer connections its member accepted before (etcd checks the
// CRL only at accept): peers reconnect within moments. The CRL lists only
// certificates that can reach a peer port (managers'), so a worker's
// removal changes no serial and drops nothing.

// crlFile is the CRL (DER) this manager's etcd member checks peers with.
func (m *Manager) crlFile() string { return m.path("certs", "peer.crl") }

// ensureCRLFile gives etcd a CRL before it starts: it refuses every peer
// when the file is missing. A manager that has run before keeps the last
// CRL it copied; a joining (or upgraded) one starts with an empty
// placeholder until followCRL copies the cluster's, right after etcd is
// up.
func (m *Manager) ensureCRLFile() error {
	if _, err := os.Stat(m.crlFile()); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("manager: %w", err)
	}
	der, err := ca.PlaceholderCRL()
	if err != nil {
		return fmt.Errorf("manager: placeholder CRL: %w", err)
	}
	return atomicfile.WriteFile(m.crlFile(), der, 0o600)
}

// followCRL copies the cluster's CRL to crlFile now and after every
// change, until ctx ends. The file is replaced by a rename, so etcd never
// reads half a CRL.
func (m *Manager) followCRL(ctx context.Context) {
	rev, err := m.store.Revision(ctx)
	if err != nil {
		m.log.Warn("cannot read the etcd peer CRL yet", "err", err)
	}
	if der, _, err := m.store.CRL(ctx); err == nil {
		m.writeCRL(der)
	} else if !errors.Is(err, store.ErrNotFound) {
		m.log.Warn("cannot read the etcd peer CRL", "err", err)
	}
	m.store.FollowCRL(ctx, rev, m.writeCRL)
}

func (m *Manager) writeCRL(der []byte) {
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		// Never hand etcd a CRL it cannot parse: it would refuse every
		// peer. The last good one stays.
		m.log.Error("the cluster's etcd peer CRL does not parse; keeping the previous one", "err", err)
		return
	}
	old, _ := os.ReadFile(m.crlFile())
	if bytes.Equal(old, der) {
		return
	}
	if err := atomicfile.WriteFile(m.crlFile(), der, 0o600); err != nil {
		m.log.Error("cannot write the etcd peer CRL: removed managers may still reach this member", "err", err)
		return
	}
	m.log.Debug("etcd peer CRL written", "revoked_certificates", len(crl.RevokedCertificateEntries))
	if m.member != nil && listsMore(old, crl) {
		// etcd checks the CRL at accept only: a connection the newly
		// listed manager opened before would live on.
		n, err := m.member.DropPeerConnections()
		if err != nil {
			m.log.Error("cannot close the etcd peer connections opened before a manager's removal; restart this manager to drop them", "err", err)
			return
		}
		m.log.Info("etcd peer connections dropped after a revocation; peers reconnect and are checked against the new CRL", "connections", n)
	}
}

// listsMore reports whether crl revokes a serial the CRL in oldDER does
// not (or oldDER is no CRL).
func listsMore(oldDER []byte, crl *x509.RevocationList) bool {
	old, err := x509.ParseRevocationList(oldDER)
	if err != nil {
		return true
	}
	had := make(map[string]bool, len(old.RevokedCertificateEntries))
	for _, e := range old.RevokedCertificateEntries {
		had[e.SerialNumber.String()] = true
	}
	for _, e := range crl.RevokedCertificateEntries {
		if !had[e.SerialNumber.String()] {
			return true
		}
	}
	return false
}
