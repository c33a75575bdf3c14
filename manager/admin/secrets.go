package admin

import (
	"context"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
)

// CreateSecret validates and stores a new secret. The request's data is
// zeroed once sealed.
func (s *Server) CreateSecret(ctx context.Context, req *adminapi.CreateSecretRequest) (*adminapi.CreateSecretResponse, error) {
	defer clear(req.Data)
	if err := s.ready(); err != nil {
		return nil, err
	}
	spec := req.GetSpec()
	if spec == nil {
		return nil, invalid("secret spec is missing")
	}
	if err := validateName("secret", spec.Name); err != nil {
		return nil, err
	}
	if err := validateData(len(req.Data)); err != nil {
		return nil, err
	}
	if err := validateLabels(spec.Labels); err != nil {
		return nil, err
	}
	sec, err := s.cfg.Store.CreateSecret(audited(ctx), spec, req.Data)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminapi.CreateSecretResponse{Secret: sec}, nil
}

func (s *Server) GetSecret(ctx context.Context, req *adminapi.GetSecretRequest) (*adminapi.GetSecretResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if req.GetNameOrId() == "" {
		return nil, invalid("give a secret name or ID")
	}
	sec, err := s.cfg.Store.GetSecret(ctx, req.NameOrId)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminapi.GetSecretResponse{Secret: sec}, nil
}

func (s *Server) ListSecrets(ctx context.Context, _ *adminapi.ListSecretsRequest) (*adminapi.ListSecretsResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	secs, err := s.cfg.Store.ListSecrets(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminapi.ListSecretsResponse{Secrets: secs}, nil
}

// UpdateSecret changes labels only; a secret's name and data are fixed.
func (s *Server) UpdateSecret(ctx context.Context, req *adminapi.UpdateSecretRequest) (*adminapi.UpdateSecretResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if req.GetNameOrId() == "" {
		return nil, invalid("give a secret name or ID")
	}
	spec := req.GetSpec()
	if spec == nil {
		spec = &types.SecretSpec{}
	}
	if err := validateLabels(spec.Labels); err != nil {
		return nil, err
	}
	sec, err := s.cfg.Store.UpdateSecret(audited(ctx), req.NameOrId, req.Version, spec)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminapi.UpdateSecretResponse{Secret: sec}, nil
}

// RemoveSecret removes a secret no service references.
func (s *Server) RemoveSecret(ctx context.Context, req *adminapi.RemoveSecretRequest) (*adminapi.RemoveSecretResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if req.GetNameOrId() == "" {
		return nil, invalid("give a secret name or ID")
	}
	if err := s.cfg.Store.RemoveSecret(audited(ctx), req.NameOrId); err != nil {
		return nil, toStatus(err)
	}
	return &adminapi.RemoveSecretResponse{}, nil
}
