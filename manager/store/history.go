package store

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lockbox-project/lockbox/api/types"
)

// ViewInputsAt reads every service and the node nodeID as they were at
// revision rev: what a dispatcher needs to rebuild the view a node had
// when it resumes. ok is false for a compacted or future revision, or a
// node that did not exist then.
func (s *Store) ViewInputsAt(ctx context.Context, rev int64, nodeID string) (svcs []*types.Service, node *types.Node, ok bool, err error) {
	if !validRef(nodeID) {
		return nil, nil, false, nil
	}
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.prefix+"services/", clientv3.WithPrefix(), clientv3.WithRev(rev)),
		clientv3.OpGet(s.nodeKey(nodeID), clientv3.WithRev(rev)),
	).Commit()
	if errors.Is(err, rpctypes.ErrCompacted) || errors.Is(err, rpctypes.ErrFutureRev) {
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, false, fmt.Errorf("read revision %d: %w", rev, err)
	}
	if svcs, err = decodeAll(resp.Responses[0].GetResponseRange().Kvs, decodeService); err != nil {
		return nil, nil, false, fmt.Errorf("at revision %d: %w", rev, err)
	}
	kvs := resp.Responses[1].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, nil, false, nil
	}
	if node, err = decodeNode(kvs[0]); err != nil {
		return nil, nil, false, fmt.Errorf("at revision %d: %w", rev, err)
	}
	return svcs, node, true, nil
}
