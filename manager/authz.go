package manager

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lockbox-project/lockbox/manager/ca"
	"github.com/lockbox-project/lockbox/pki"
)

// access says who may call a method on the TCP listener.
type access int

const (
	anyone   access = iota + 1 // no certificate (root CA, join with token)
	nodes                      // worker or manager certificate
	managers                   // manager certificate
	admins                     // admin certificate
)

// tcpPolicy lists every method reachable over TCP; anything else is
// refused, so a new RPC is closed until someone decides who may call it.
var tcpPolicy = map[string]access{
	"/lockbox.ca.NodeCA/GetRootCACertificate":  anyone,
	"/lockbox.ca.NodeCA/IssueNodeCertificate":  anyone,
	"/lockbox.ca.NodeCA/RenewNodeCertificate":  nodes,
	"/lockbox.dispatcher.Dispatcher/Session":   nodes,
	"/lockbox.dispatcher.Dispatcher/Heartbeat": nodes,
	"/lockbox.cluster.Cluster/Join":            managers,
	"/lockbox.cluster.Cluster/Promote":         managers,
}

const adminService = "/lockbox.admin.Admin/"

// unlockMethod is the one call a locked manager serves.
const unlockMethod = "/lockbox.admin.Admin/Unlock"

// authorizer checks each call on the TCP listener against tcpPolicy, the
// caller's verified certificate and the revocation list, and refuses
// everything but Unlock while the manager is locked.
type authorizer struct {
	ca     func() *ca.CA // nil until the CA is loaded
	locked func() bool
}

// socketOnlyMethods are Admin calls served on the root-only admin socket
// and never over TCP: an admin certificate must not mint its own successor
// (revoking it would mean nothing).
var socketOnlyMethods = map[string]bool{
	"/lockbox.admin.Admin/IssueAdminCredentials": true,
}

func (a *authorizer) check(ctx context.Context, method string) error {
	if socketOnlyMethods[method] {
		return status.Errorf(codes.PermissionDenied, "%s is served on the manager's root-only admin socket only", method)
	}
	if a.locked() && method != unlockMethod {
		return status.Error(codes.FailedPrecondition, "this manager is locked (autolock): run 'lockbox unlock' with the cluster's unlock key")
	}
	need, ok := tcpPolicy[method]
	if !ok && strings.HasPrefix(method, adminService) {
		need, ok = admins, true
	}
	if !ok {
		return status.Errorf(codes.PermissionDenied, "%s is not served on this listener", method)
	}
	if need == anyone {
		return nil
	}
	who, err := pki.PeerIdentity(ctx)
	if err != nil {
		return status.Error(codes.Unauthenticated, "this call needs a client certificate of the cluster")
	}
	c := a.ca()
	if c == nil {
		return status.Error(codes.Unavailable, "the manager is starting")
	}
	if who.ClusterID != c.ClusterID {
		return status.Error(codes.PermissionDenied, "certificate of another cluster")
	}
	if c.IsRevoked(who.NodeID) {
		return status.Errorf(codes.PermissionDenied, "node %s is revoked", who.NodeID)
	}
	allowed := false
	switch need {
	case nodes:
		allowed = who.Role == pki.RoleWorker || who.Role == pki.RoleManager
	case managers:
		allowed = who.Role == pki.RoleManager
	case admins:
		allowed = who.Role == pki.RoleAdmin
	}
	if !allowed {
		return status.Errorf(codes.PermissionDenied, "a %s certificate may not call %s", who.Role, method)
	}
	return nil
}

func (a *authorizer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (a *authorizer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}
