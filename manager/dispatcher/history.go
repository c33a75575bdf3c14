package dispatcher

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/types"
)

// EtcdHistory reads past revisions of the store's services and nodes
// straight from etcd (the store's layout: <prefix>services/<id> and
// <prefix>nodes/<id>, protobuf values). It answers ok=false for a
// compacted or future revision.
type EtcdHistory struct {
	Client *clientv3.Client
	Prefix string
}

// ViewInputsAt implements HistoryReader.
func (h EtcdHistory) ViewInputsAt(ctx context.Context, rev int64, nodeID string) ([]*types.Service, *types.Node, bool, error) {
	resp, err := h.Client.Txn(ctx).Then(
		clientv3.OpGet(h.Prefix+"services/", clientv3.WithPrefix(), clientv3.WithRev(rev)),
		clientv3.OpGet(h.Prefix+"nodes/"+nodeID, clientv3.WithRev(rev)),
	).Commit()
	if errors.Is(err, rpctypes.ErrCompacted) || errors.Is(err, rpctypes.ErrFutureRev) {
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, false, fmt.Errorf("read revision %d: %w", rev, err)
	}
	var svcs []*types.Service
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		s := &types.Service{}
		if err := proto.Unmarshal(kv.Value, s); err != nil {
			return nil, nil, false, fmt.Errorf("decode service at revision %d: %w", rev, err)
		}
		// As the store does: the version is the key's mod revision.
		if s.Meta == nil {
			s.Meta = &types.Meta{}
		}
		s.Meta.Version = uint64(kv.ModRevision)
		svcs = append(svcs, s)
	}
	kvs := resp.Responses[1].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, nil, false, nil
	}
	n := &types.Node{}
	if err := proto.Unmarshal(kvs[0].Value, n); err != nil {
		return nil, nil, false, fmt.Errorf("decode node at revision %d: %w", rev, err)
	}
	return svcs, n, true, nil
}
