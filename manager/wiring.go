package manager

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/admin"
	"github.com/lockbox-project/lockbox/manager/ca"
	"github.com/lockbox-project/lockbox/manager/dispatcher"
	"github.com/lockbox-project/lockbox/manager/store"
	"github.com/lockbox-project/lockbox/pki"
)

// The adapters below implement manager/admin's interfaces on the pieces
// this package owns.

type tokenIssuer struct{ m *Manager }

func (t tokenIssuer) JoinToken(ctx context.Context, role types.NodeRole, rotate bool) (string, error) {
	r := pki.RoleWorker
	if role == types.NodeRole_NODE_ROLE_MANAGER {
		r = pki.RoleManager
	}
	tok, err := t.m.ca().JoinToken(ctx, r, rotate)
	if err == nil && rotate {
		t.m.log.Info("join token rotated", "role", r.String())
	}
	return tok, err
}

// unlocker is manager/admin's KeyManager, logging unlocks.
type unlocker struct {
	admin.KeyManager
	m *Manager
}

func (u unlocker) Unlock(ctx context.Context, key string) error {
	if err := u.KeyManager.Unlock(ctx, key); err != nil {
		return err
	}
	u.m.log.Info("manager unlocked")
	return nil
}

type revoker struct{ m *Manager }

// removeMemberTimeout bounds the retries of an etcd member removal (a
// cluster electing a leader cannot commit it for a moment).
const removeMemberTimeout = 30 * time.Second

// RevokeNode revokes the node on every manager (the revocation is in the
// store and followed by each CA; its certificates go into the CRL every
// etcd peer checks) and ends its session here at once; a manager node
// also leaves the etcd cluster. Any failure is returned, so the node is
// not forgotten and removing it again finishes the job.
func (r revoker) RevokeNode(ctx context.Context, n *types.Node) error {
	if n.Id == r.m.st.NodeID {
		return errors.New("a manager cannot remove itself: remove it from another manager")
	}
	// The serial the node record shows is recorded too: a node that
	// joined before serials were recorded at issue time still gets its
	// current certificate into the CRL.
	if serial := n.GetCertificate().GetSerial(); serial != "" {
		c := store.IssuedCert{Serial: serial, Peer: n.Role == types.NodeRole_NODE_ROLE_MANAGER}
		if na := n.GetCertificate().GetNotAfter(); na != nil {
			c.NotAfter = na.AsTime()
		}
		if err := r.m.store.RecordCertificate(ctx, n.Id, c); err != nil && !errors.Is(err, store.ErrRevoked) {
			return err
		}
	}
	if err := r.m.ca().Revoke(ctx, n.Id); err != nil {
		return err
	}
	r.m.disp.EndSession(n.Id, dispatcher.ErrRevoked)
	if n.Role == types.NodeRole_NODE_ROLE_MANAGER && r.m.member != nil {
		rctx, cancel := context.WithTimeout(ctx, removeMemberTimeout)
		err := r.m.member.RemoveMember(rctx, n.Id)
		cancel()
		if err != nil {
			r.m.log.Error("revoked manager is still an etcd member", "node", n.Id, "err", err)
			return fmt.Errorf("manager %s is revoked (its certificates are refused by every etcd peer), but it is still an etcd member: %w; run 'lockbox node rm' again", n.Id, err)
		}
		r.m.log.Info("manager removed from etcd", "node", n.Id)
	}
	r.m.log.Info("node revoked", "node", n.Id)
	return nil
}

// registrar records joining nodes in the store.
type registrar struct{ m *Manager }

func (r registrar) RegisterNode(ctx context.Context, id pki.Identity, desc *types.NodeDescription, certPEM []byte) error {
	cert, err := parsePEMCert(certPEM)
	if err != nil {
		return err
	}
	_, err = r.m.store.CreateNode(ctx, &types.Node{
		Id:          id.NodeID,
		Role:        id.Role.NodeRole(),
		Description: desc,
		Certificate: certInfo(cert),
	})
	if errors.Is(err, store.ErrInvalid) || errors.Is(err, store.ErrNameConflict) {
		// A description the store refuses (or a hostname another node
		// holds): the joiner is told why.
		return fmt.Errorf("%w: %w", ca.ErrJoinRefused, err)
	}
	return err
}

// RecordCertificate notes a renewed certificate on the node.
func (r registrar) RecordCertificate(ctx context.Context, id pki.Identity, certPEM []byte) error {
	cert, err := parsePEMCert(certPEM)
	if err != nil {
		return err
	}
	_, err = r.m.store.UpdateNode(ctx, id.NodeID, func(n *types.Node) error {
		n.Certificate = certInfo(cert)
		return nil
	})
	return err
}
