package pki

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/lockbox-project/lockbox/api/types"
)

// Role is what a certificate allows its holder to do.
type Role int

// Roles, carried in the certificate's OU.
const (
	RoleWorker Role = iota + 1
	RoleManager
	RoleAdmin
)

// OU values for each role.
const (
	WorkerOU  = "lockbox-worker"
	ManagerOU = "lockbox-manager"
	AdminOU   = "lockbox-admin"
)

// ManagerDNSName is in every manager certificate (and in no other): clients
// verify managers by it, and etcd peers must present it.
const ManagerDNSName = "lockbox-manager"

func (r Role) String() string {
	switch r {
	case RoleWorker:
		return WorkerOU
	case RoleManager:
		return ManagerOU
	case RoleAdmin:
		return AdminOU
	}
	return fmt.Sprintf("role(%d)", int(r))
}

// NodeRole converts a node role to the API type; admins are not nodes.
func (r Role) NodeRole() types.NodeRole {
	if r == RoleManager {
		return types.NodeRole_NODE_ROLE_MANAGER
	}
	return types.NodeRole_NODE_ROLE_WORKER
}

func roleFromOU(ou string) (Role, bool) {
	switch ou {
	case WorkerOU:
		return RoleWorker, true
	case ManagerOU:
		return RoleManager, true
	case AdminOU:
		return RoleAdmin, true
	}
	return 0, false
}

// Identity is who a verified certificate names.
type Identity struct {
	NodeID    string
	Role      Role
	ClusterID string
	Serial    string
}

// ErrNoIdentity is returned when a call carries no verified client
// certificate.
var ErrNoIdentity = errors.New("no verified client certificate")

// IdentityFromCert reads the identity of a certificate that has already been
// verified against the root CA.
func IdentityFromCert(c *x509.Certificate) (Identity, error) {
	if len(c.Subject.OrganizationalUnit) != 1 || len(c.Subject.Organization) != 1 || c.Subject.CommonName == "" {
		return Identity{}, fmt.Errorf("certificate %s: subject must carry one CN, OU and O", c.SerialNumber)
	}
	role, ok := roleFromOU(c.Subject.OrganizationalUnit[0])
	if !ok {
		return Identity{}, fmt.Errorf("certificate %s: unknown role %q", c.SerialNumber, c.Subject.OrganizationalUnit[0])
	}
	return Identity{
		NodeID:    c.Subject.CommonName,
		Role:      role,
		ClusterID: c.Subject.Organization[0],
		Serial:    c.SerialNumber.Text(16),
	}, nil
}

// PeerIdentity returns the identity of the gRPC caller in ctx, from the
// client certificate the TLS handshake verified. Only verified chains count:
// a certificate the client merely presented is ignored.
func PeerIdentity(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, ErrNoIdentity
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Identity{}, ErrNoIdentity
	}
	return IdentityFromCert(info.State.VerifiedChains[0][0])
}
