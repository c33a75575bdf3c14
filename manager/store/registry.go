package store

import (
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The manager registry: each running manager publishes its advertised
// address under a lease it keeps alive, so a manager that is gone drops
// out of the list agents receive.

// ManagerAddr is one registered manager.
type ManagerAddr struct {
	NodeID string
	Addr   string
}

// RegisterManager publishes addr for nodeID under a lease of ttlSeconds
// and keeps the lease alive until ctx ends (the entry then expires).
func (s *Store) RegisterManager(ctx context.Context, nodeID, addr string, ttlSeconds int64) error {
	if !validRef(nodeID) {
		return errorf(ErrInvalid, "register manager: invalid node ID %q", nodeID)
	}
	lease, err := s.cli.Grant(ctx, ttlSeconds)
	if err != nil {
		return fmt.Errorf("register manager address: %w", err)
	}
	if _, err := s.cli.Put(ctx, s.managersPrefix()+nodeID, addr, clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("register manager address: %w", err)
	}
	ka, err := s.cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return fmt.Errorf("register manager address: %w", err)
	}
	go func() {
		for range ka {
		}
	}()
	return nil
}

// Managers lists the registered managers, by node ID, and the revision
// read at. serializable reads this member's copy without a quorum: a
// learner can answer it.
func (s *Store) Managers(ctx context.Context, serializable bool) ([]ManagerAddr, int64, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	resp, err := s.cli.Get(ctx, s.managersPrefix(), opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("read managers: %w", err)
	}
	list := make([]ManagerAddr, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		list = append(list, ManagerAddr{NodeID: strings.TrimPrefix(string(kv.Key), s.managersPrefix()), Addr: string(kv.Value)})
	}
	return list, resp.Header.Revision, nil
}

// FollowManagers calls fn with the registered managers after every change
// made after revision after, and again in full whenever the watch broke,
// until ctx ends.
func (s *Store) FollowManagers(ctx context.Context, after int64, fn func([]ManagerAddr)) {
	s.follow(ctx, s.managersPrefix(), true, after, func(ctx context.Context) {
		if list, _, err := s.Managers(ctx, false); err == nil {
			fn(list)
		}
	})
}
