package manager

import (
	"context"
	"errors"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/admin"
	"github.com/lockbox-project/lockbox/manager/ca"
	"github.com/lockbox-project/lockbox/manager/dispatcher"
	"github.com/lockbox-project/lockbox/manager/etcd"
)

// The adapters below implement manager/admin's interfaces on the pieces
// this package owns.

type tokenIssuer struct{ m *Manager }

func (t tokenIssuer) JoinToken(ctx context.Context, role types.NodeRole, rotate bool) (string, error) {
	r := ca.RoleWorker
	if role == types.NodeRole_NODE_ROLE_MANAGER {
		r = ca.RoleManager
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

// RevokeNode revokes the node on every manager (the revocation is in etcd
// and followed by each CA) and ends its session here at once; a manager
// node also leaves the etcd cluster.
func (r revoker) RevokeNode(ctx context.Context, n *types.Node) error {
	if n.Id == r.m.st.NodeID {
		return errors.New("a manager cannot remove itself: remove it from another manager")
	}
	if err := r.m.ca().Revoke(ctx, n.Id); err != nil {
		return err
	}
	r.m.disp.EndSession(n.Id, dispatcher.ErrRevoked)
	if n.Role == types.NodeRole_NODE_ROLE_MANAGER && r.m.member != nil {
		if err := etcd.RemoveMember(ctx, r.m.cli, n.Id); err != nil {
			r.m.log.Warn("removed manager is still an etcd member", "node", n.Id, "err", err)
		}
	}
	r.m.log.Info("node revoked", "node", n.Id)
	return nil
}

// registrar records joining nodes in the store.
type registrar struct{ m *Manager }

func (r registrar) RegisterNode(ctx context.Context, id ca.Identity, desc *types.NodeDescription, certPEM []byte) error {
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
	return err
}

// RecordCertificate notes a renewed certificate on the node.
func (r registrar) RecordCertificate(ctx context.Context, id ca.Identity, certPEM []byte) error {
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
