package admin

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
)

func (s *Server) GetJoinToken(ctx context.Context, req *adminapi.GetJoinTokenRequest) (*adminapi.GetJoinTokenResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if s.cfg.Tokens == nil {
		return nil, unimplemented("join tokens")
	}
	switch req.GetRole() {
	case types.NodeRole_NODE_ROLE_WORKER, types.NodeRole_NODE_ROLE_MANAGER:
	default:
		return nil, invalid("role must be worker or manager")
	}
	tok, err := s.cfg.Tokens.JoinToken(ctx, req.Role, req.Rotate)
	if err != nil {
		return nil, toStatus(err)
	}
	action := store.AuditJoinTokenRead
	if req.Rotate {
		action = store.AuditJoinTokenRotate
	}
	role := "worker"
	if req.Role == types.NodeRole_NODE_ROLE_MANAGER {
		role = "manager"
	}
	s.record(ctx, action, "join-token", "", role)
	resp := &adminapi.GetJoinTokenResponse{Token: tok}
	if s.cfg.Managers != nil {
		resp.Managers = s.cfg.Managers()
	}
	return resp, nil
}

func (s *Server) GetUnlockKey(ctx context.Context, req *adminapi.GetUnlockKeyRequest) (*adminapi.GetUnlockKeyResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if s.cfg.Unlocker == nil {
		return nil, unimplemented("autolock")
	}
	key, on, err := s.cfg.Unlocker.UnlockKey(ctx, req.Rotate)
	if err != nil {
		return nil, toStatus(err)
	}
	action := store.AuditUnlockKeyRead
	if req.Rotate {
		action = store.AuditUnlockKeyRotate
	}
	s.record(ctx, action, "unlock-key", "", "")
	return &adminapi.GetUnlockKeyResponse{UnlockKey: key, Autolock: on}, nil
}

// Unlock is the one call a locked manager serves.
func (s *Server) Unlock(ctx context.Context, req *adminapi.UnlockRequest) (*adminapi.UnlockResponse, error) {
	if s.cfg.Unlocker == nil {
		return nil, unimplemented("autolock")
	}
	if !s.cfg.Unlocker.Locked() {
		return nil, status.Error(codes.FailedPrecondition, "this manager is not locked")
	}
	if req.GetUnlockKey() == "" {
		return nil, invalid("the unlock key is empty")
	}
	// Never echo the key back: the messages below name no key.
	switch err := s.cfg.Unlocker.Unlock(ctx, req.UnlockKey); {
	case err == nil:
	case errors.Is(err, keys.ErrBadUnlockKey):
		return nil, status.Error(codes.InvalidArgument, keys.ErrBadUnlockKey.Error())
	case errors.Is(err, keys.ErrWrongKey):
		return nil, status.Error(codes.InvalidArgument, "wrong unlock key: it does not unlock this cluster (was it rotated? 'lockbox unlock-key' on an unlocked manager shows the current one)")
	default:
		return nil, toStatus(err)
	}
	return &adminapi.UnlockResponse{}, nil
}

func (s *Server) RotateDataKey(ctx context.Context, _ *adminapi.RotateDataKeyRequest) (*adminapi.RotateDataKeyResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if s.cfg.DataKeys == nil {
		return nil, unimplemented("data key rotation")
	}
	n, err := s.cfg.DataKeys.RotateDataKey(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	s.record(ctx, store.AuditDataKeyRotate, "data-key", "", "")
	return &adminapi.RotateDataKeyResponse{Resealed: uint64(n)}, nil
}

// AdminCredentialer issues short-lived admin certificates and revokes them.
type AdminCredentialer interface {
	// IssueAdmin makes a key and an admin certificate valid for lifetime.
	IssueAdmin(ctx context.Context, lifetime time.Duration) (AdminCredentials, error)
	// RevokeAdmin revokes the admin certificate named id on every manager.
	RevokeAdmin(ctx context.Context, id string) error
}

// AdminCredentials is what IssueAdmin returns.
type AdminCredentials struct {
	ID                       string
	CertPEM, KeyPEM, RootPEM []byte
	NotAfter                 time.Time
}

// Admin credential lifetimes: short by default, so a lost copy expires on
// its own; bounded, so none is long-lived.
const (
	DefaultAdminLifetime = 12 * time.Hour
	MaxAdminLifetime     = 7 * 24 * time.Hour
	// AdminIDPrefix starts every admin certificate's ID.
	AdminIDPrefix = "admin-"
)

func (s *Server) IssueAdminCredentials(ctx context.Context, req *adminapi.IssueAdminCredentialsRequest) (*adminapi.IssueAdminCredentialsResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if s.cfg.AdminCreds == nil {
		return nil, unimplemented("admin credentials")
	}
	lifetime := time.Duration(req.GetLifetimeSeconds()) * time.Second
	switch {
	case req.GetLifetimeSeconds() == 0:
		lifetime = DefaultAdminLifetime
	case req.GetLifetimeSeconds() < 60 || lifetime > MaxAdminLifetime:
		return nil, invalid("an admin certificate lives from 1m to %s", MaxAdminLifetime)
	}
	c, err := s.cfg.AdminCreds.IssueAdmin(ctx, lifetime)
	if err != nil {
		return nil, toStatus(err)
	}
	s.record(ctx, store.AuditAdminCredsIssue, "admin-credentials", c.ID, "")
	return &adminapi.IssueAdminCredentialsResponse{
		Id: c.ID, CertificatePem: c.CertPEM, KeyPem: c.KeyPEM, RootCaPem: c.RootPEM, NotAfterUnix: c.NotAfter.Unix(),
	}, nil
}

func (s *Server) RevokeAdminCredentials(ctx context.Context, req *adminapi.RevokeAdminCredentialsRequest) (*adminapi.RevokeAdminCredentialsResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if s.cfg.AdminCreds == nil {
		return nil, unimplemented("admin credentials")
	}
	if !strings.HasPrefix(req.GetId(), AdminIDPrefix) || len(req.GetId()) == len(AdminIDPrefix) {
		return nil, invalid("%q is not an admin credentials ID (%s...): revoke a node with 'lockbox node rm'", req.GetId(), AdminIDPrefix)
	}
	if err := s.cfg.AdminCreds.RevokeAdmin(ctx, req.Id); err != nil {
		return nil, toStatus(err)
	}
	s.record(ctx, store.AuditAdminCredsRevoke, "admin-credentials", req.Id, "")
	return &adminapi.RevokeAdminCredentialsResponse{}, nil
}
