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
	live, err := s.liveStatus(ctx, []*types.Node{n})
	if err != nil {
		return nil, err
	}
	return &adminapi.GetNodeResponse{Node: n, Live: live[n.Id]}, nil
}

func (s *Server) ListNodes(ctx context.Context, _ *adminapi.ListNodesRequest) (*adminapi.ListNodesResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	nodes, err := s.cfg.Store.ListNodes(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	live, err := s.liveStatus(ctx, nodes)
	if err != nil {
		return nil, err
	}
	return &adminapi.ListNodesResponse{Nodes: nodes, Live: live}, nil
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
	// The node's container rows (service ps) go with it. The node is gone
	// whatever happens here: rows left behind are shown as on a removed
	// node, and a second removal is refused (not found), so say it.
	if _, err := s.cfg.Store.RemoveNodeContainers(ctx, n.Id); err != nil {
		s.log.Warn("node removed, but not its container rows; service ps shows them as on a removed node", "node", n.Id, "err", err)
	}
	return &adminapi.RemoveNodeResponse{}, nil
}

// liveStatus is what this manager knows of nodes now, by node ID: its
// dispatcher's view (session, last heartbeat, grants held) and, for
// managers, whether their registration is live. Nodes it knows nothing
// of are left out.
func (s *Server) liveStatus(ctx context.Context, nodes []*types.Node) (map[string]*types.NodeLiveStatus, error) {
	running := map[string]bool{}
	for _, n := range nodes {
		if n.Role == types.NodeRole_NODE_ROLE_MANAGER {
			ms, _, err := s.cfg.Store.Managers(ctx, true)
			if err != nil {
				return nil, toStatus(err)
			}
			for _, m := range ms {
				running[m.NodeID] = true
			}
			break
		}
	}
	out := map[string]*types.NodeLiveStatus{}
	for _, n := range nodes {
		var st *types.NodeLiveStatus
		if s.cfg.Live != nil {
			st = s.cfg.Live.LiveNode(n.Id)
		}
		if running[n.Id] {
			if st == nil {
				st = &types.NodeLiveStatus{}
			}
			st.ManagerRunning = true
		}
		if st != nil {
			out[n.Id] = st
		}
	}
	return out, nil
}
