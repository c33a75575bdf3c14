package admin

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
)

// ListServiceContainers lists the containers holding a service's secrets,
// as their nodes last reported them (the dispatcher writes the rows from
// each node's own heartbeat; manager/store keeps them). Rows of a node
// that left the cluster are shown as such rather than hidden.
func (s *Server) ListServiceContainers(ctx context.Context, req *adminapi.ListServiceContainersRequest) (*adminapi.ListServiceContainersResponse, error) {
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
	rows, next, err := s.cfg.Store.ListServiceContainers(ctx, svc.Id, req.GetAfter(), int(req.GetLimit()))
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &adminapi.ListServiceContainersResponse{Service: svc, NextPage: next}
	if len(rows) == 0 {
		return resp, nil
	}
	// One read of the nodes for the page, not one per row.
	nodes, err := s.cfg.Store.ListNodes(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	hostnames := make(map[string]string, len(nodes))
	for _, n := range nodes {
		hostnames[n.Id] = n.GetDescription().GetHostname()
	}
	for _, r := range rows {
		host, known := hostnames[r.NodeID]
		c := &adminapi.ServiceContainer{ContainerId: r.ContainerID, NodeId: r.NodeID, NodeHostname: host, NodeRemoved: !known,
			State: string(r.State), Error: r.Error, MountedAt: timestamppb.New(r.Mounted), UpdatedAt: timestamppb.New(r.Updated)}
		for _, sec := range r.Secrets {
			c.Secrets = append(c.Secrets, &adminapi.ContainerSecret{SecretId: sec.ID, SecretName: sec.Name})
		}
		resp.Containers = append(resp.Containers, c)
	}
	return resp, nil
}
