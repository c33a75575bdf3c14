package admin

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/keys"
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
	return &adminapi.RotateDataKeyResponse{Resealed: uint64(n)}, nil
}
