package admin

import (
	"context"
	"errors"

	"google.golang.org/protobuf/proto"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/store"
)

// resolveRefs returns a copy of spec whose references name their secrets
// by both ID and name, as the store has them. A reference gives one or
// the other (a name, an ID or a unique ID prefix). The store checks
// existence again in the write itself.
func (s *Server) resolveRefs(ctx context.Context, spec *types.ServiceSpec) (*types.ServiceSpec, error) {
	spec = proto.Clone(spec).(*types.ServiceSpec)
	for i, ref := range spec.Secrets {
		if ref == nil {
			return nil, invalid("secret reference %d is empty", i+1)
		}
		key := ref.SecretId
		if key == "" {
			key = ref.SecretName
		}
		if key == "" {
			return nil, invalid("secret reference %d names no secret (source)", i+1)
		}
		sec, err := s.cfg.Store.GetSecret(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			return nil, invalid("secret '%s' not found: create it before referencing it", key)
		}
		if err != nil {
			return nil, toStatus(err)
		}
		if ref.SecretId != "" && ref.SecretName != "" && ref.SecretName != sec.Spec.GetName() {
			return nil, invalid("secret reference %d: ID %s is secret '%s', not '%s'", i+1, ref.SecretId, sec.Spec.GetName(), ref.SecretName)
		}
		ref.SecretId, ref.SecretName = sec.Id, sec.Spec.GetName()
	}
	return spec, nil
}

func (s *Server) CreateService(ctx context.Context, req *adminapi.CreateServiceRequest) (*adminapi.CreateServiceResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	spec := req.GetSpec()
	if spec == nil {
		return nil, invalid("service spec is missing")
	}
	// Cheap checks first, so a bad name is reported before a missing secret.
	if err := validateNewServiceName(spec.Name); err != nil {
		return nil, err
	}
	spec, err := s.resolveRefs(ctx, spec)
	if err != nil {
		return nil, err
	}
	if err := validateServiceSpec(spec); err != nil {
		return nil, err
	}
	svc, err := s.cfg.Store.CreateService(audited(ctx), spec)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminapi.CreateServiceResponse{Service: svc}, nil
}

func (s *Server) GetService(ctx context.Context, req *adminapi.GetServiceRequest) (*adminapi.GetServiceResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if req.GetNameOrId() == "" {
		return nil, invalid("give a service name or ID")
	}
	svc, err := s.cfg.Store.GetService(ctx, req.NameOrId)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminapi.GetServiceResponse{Service: svc}, nil
}

func (s *Server) ListServices(ctx context.Context, _ *adminapi.ListServicesRequest) (*adminapi.ListServicesResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	svcs, err := s.cfg.Store.ListServices(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminapi.ListServicesResponse{Services: svcs}, nil
}

// UpdateService replaces a service's spec if req.Version is its current
// version (Aborted otherwise: read again and retry).
func (s *Server) UpdateService(ctx context.Context, req *adminapi.UpdateServiceRequest) (*adminapi.UpdateServiceResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if req.GetNameOrId() == "" {
		return nil, invalid("give a service name or ID")
	}
	if req.GetSpec() == nil {
		return nil, invalid("service spec is missing")
	}
	cur, err := s.cfg.Store.GetService(ctx, req.NameOrId)
	if err != nil {
		return nil, toStatus(err)
	}
	spec := req.Spec
	if spec.Name == "" {
		spec = proto.Clone(spec).(*types.ServiceSpec)
		spec.Name = cur.Spec.GetName()
	}
	if spec.Name != cur.Spec.GetName() {
		return nil, invalid("service '%s' cannot be renamed", cur.Spec.GetName())
	}
	spec, err = s.resolveRefs(ctx, spec)
	if err != nil {
		return nil, err
	}
	if err := validateServiceSpec(spec); err != nil {
		return nil, err
	}
	svc, err := s.cfg.Store.UpdateService(audited(ctx), cur.Id, req.Version, spec)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminapi.UpdateServiceResponse{Service: svc}, nil
}

func (s *Server) RemoveService(ctx context.Context, req *adminapi.RemoveServiceRequest) (*adminapi.RemoveServiceResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if req.GetNameOrId() == "" {
		return nil, invalid("give a service name or ID")
	}
	if err := s.cfg.Store.RemoveService(audited(ctx), req.NameOrId); err != nil {
		return nil, toStatus(err)
	}
	return &adminapi.RemoveServiceResponse{}, nil
}
