package admin

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
)

func (s *Server) GetNode(ctx context.Context, req *adminapi.GetNodeRequest) (*adminapi.GetNodeResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if req.GetNameOrId() == "" {
		return nil, invalid("give a node ID or hostname")
	}
	n, err := s.cfg.Store.GetNode(ctx, req.NameOrId)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &adminapi.GetNodeResponse{Node: n}
	if s.cfg.Live != nil {
		resp.Live = s.cfg.Live.LiveNode(n.Id)
	}
	return resp, nil
}

func (s *Server) ListNodes(ctx context.Context, _ *adminapi.ListNodesRequest) (*adminapi.ListNodesResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	nodes, err := s.cfg.Store.ListNodes(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &adminapi.ListNodesResponse{Nodes: nodes}
	if s.cfg.Live != nil {
		resp.Live = map[string]*types.NodeLiveStatus{}
		for _, n := range nodes {
			if st := s.cfg.Live.LiveNode(n.Id); st != nil {
				resp.Live[n.Id] = st
			}
		}
	}
	return resp, nil
}

// UpdateNode replaces the node's operator-set spec (labels).
func (s *Server) UpdateNode(ctx context.Context, req *adminapi.UpdateNodeRequest) (*adminapi.UpdateNodeResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if req.GetNameOrId() == "" {
		return nil, invalid("give a node ID or hostname")
	}
	spec := req.GetSpec()
	if spec == nil {
		spec = &types.NodeSpec{}
	}
	if err := validateLabels(spec.Labels); err != nil {
		return nil, err
	}
	n, err := s.cfg.Store.UpdateNodeSpec(audited(ctx), req.NameOrId, req.Version, spec)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminapi.UpdateNodeResponse{Node: n}, nil
}

// RemoveNode revokes the node's certificate, then forgets the node. A
// node that is up is only removed with force, as in swarm.
func (s *Server) RemoveNode(ctx context.Context, req *adminapi.RemoveNodeRequest) (*adminapi.RemoveNodeResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if req.GetNameOrId() == "" {
		return nil, invalid("give a node ID or hostname")
	}
	if s.cfg.Nodes == nil {
		// Without revocation the node's certificate would keep working:
		// refuse rather than pretend.
		return nil, unimplemented("node removal (certificate revocation)")
	}
	n, err := s.cfg.Store.GetNode(ctx, req.NameOrId)
	if err != nil {
		return nil, toStatus(err)
	}
	if n.State == types.NodeState_NODE_STATE_READY && !req.Force {
		return nil, status.Errorf(codes.FailedPrecondition,
			"node %s (%q) is ready: stop its agent first, or use --force to revoke it while it runs", n.Id, n.GetDescription().GetHostname())
	}
	if err := s.cfg.Nodes.RevokeNode(ctx, n); err != nil {
		return nil, toStatus(err)
	}
	if _, err := s.cfg.Store.RemoveNode(audited(ctx), n.Id); err != nil {
		return nil, toStatus(err)
	}
	return &adminapi.RemoveNodeResponse{}, nil
}
