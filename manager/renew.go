package manager

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/ca"
	"github.com/lockbox-project/lockbox/pki"
)

func (m *Manager) ownCertRequest(nodeID string) (ca.CertRequest, error) {
	host, _, err := net.SplitHostPort(m.advertise)
	if err != nil {
		return ca.CertRequest{}, err
	}
	req := ca.CertRequest{NodeID: nodeID, Role: pki.RoleManager}
	if ip := net.ParseIP(host); ip != nil {
		req.IPs = append(req.IPs, ip)
	} else {
		req.DNSNames = append(req.DNSNames, host)
	}
	return req, nil
}

// renewLoop renews the manager's own certificate when a third of its life
// is left (checked at start and then hourly; skipped while locked, since
// signing needs the CA key).
func (m *Manager) renewLoop(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if err := m.renewOwnCert(ctx, time.Now()); err != nil {
			m.log.Warn("cannot renew the manager's certificate", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Manager) renewOwnCert(ctx context.Context, now time.Time) error {
	cur := m.own.Load()
	if cur == nil || m.keys.Locked() {
		return nil
	}
	leaf, err := x509.ParseCertificate(cur.Certificate[0])
	if err != nil {
		return err
	}
	if !ca.NeedsRenewal(leaf, now) {
		return nil
	}
	req, err := m.ownCertRequest(m.st.NodeID)
	if err != nil {
		return err
	}
	kp, err := m.ca().IssueKeyPair(ctx, req)
	if err != nil {
		return err
	}
	defer clear(kp.KeyPEM)
	pair, err := kp.TLSCertificate()
	if err != nil {
		return err
	}
	// etcd reads the files at each peer handshake; gRPC takes the pair.
	if err := m.nodeKey.store(kp.CertPEM, kp.KeyPEM, m.ca().CertPEM); err != nil {
		return err
	}
	m.own.Store(&pair)
	newLeaf, _ := parsePEMCert(kp.CertPEM)
	if _, err := m.store.UpdateNode(ctx, m.st.NodeID, func(n *types.Node) error {
		n.Certificate = certInfo(newLeaf)
		return nil
	}); err != nil {
		m.log.Warn("renewed certificate not recorded on the node", "err", err)
	}
	m.log.Info("manager certificate renewed", "not_after", newLeaf.NotAfter)
	return nil
}

func parsePEMCert(p []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(p)
	if b == nil {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

func certInfo(c *x509.Certificate) *types.NodeCertificate {
	if c == nil {
		return nil
	}
	return &types.NodeCertificate{Serial: c.SerialNumber.Text(16), NotAfter: timestamppb.New(c.NotAfter)}
}
