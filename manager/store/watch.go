package store

import (
	"context"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lockbox-project/lockbox/api/types"
)

// Snapshot is every secret (without data), service and node at one store
// revision.
type Snapshot struct {
	Revision int64
	Secrets  []*types.Secret
	Services []*types.Service
	Nodes    []*types.Node
}

// Snapshot reads every object at one revision: watch from
// Snapshot.Revision to see every later change exactly once.
func (s *Store) Snapshot(ctx context.Context) (*Snapshot, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.prefix+"secrets/", clientv3.WithPrefix()),
		clientv3.OpGet(s.prefix+"services/", clientv3.WithPrefix()),
		clientv3.OpGet(s.prefix+"nodes/", clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	snap := &Snapshot{Revision: resp.Header.Revision}
	if snap.Secrets, err = decodeAll(resp.Responses[0].GetResponseRange().Kvs, decodeSecret); err != nil {
		return nil, err
	}
	if snap.Services, err = decodeAll(resp.Responses[1].GetResponseRange().Kvs, decodeService); err != nil {
		return nil, err
	}
	if snap.Nodes, err = decodeAll(resp.Responses[2].GetResponseRange().Kvs, decodeNode); err != nil {
		return nil, err
	}
	return snap, nil
}

// Kind names an object kind in an Event.
type Kind int

const (
	KindSecret Kind = iota + 1
	KindService
	KindNode
)

func (k Kind) String() string {
	switch k {
	case KindSecret:
		return "secret"
	case KindService:
		return "service"
	case KindNode:
		return "node"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Event is one object written or removed. On removal the object is its
// last value.
type Event struct {
	Kind    Kind
	Deleted bool
	ID      string
	// Exactly one of these is set, by Kind.
	Secret  *types.Secret
	Service *types.Service
	Node    *types.Node
}

// Batch is every change of one store revision, which is one transaction:
// a service update and its reference changes arrive together.
type Batch struct {
	Revision int64
	Events   []Event
	// Err ends the stream; ErrCompacted means "take a new Snapshot".
	Err error
}

// Watch streams the changes to secrets, services and nodes after revision
// after, one Batch per revision, until ctx ends or an error (sent as the
// last Batch) stops it. The channel is closed at the end.
func (s *Store) Watch(ctx context.Context, after int64) <-chan Batch {
	out := make(chan Batch, 16)
	go func() {
		defer close(out)
		ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		defer cancel()
		wch := s.cli.Watch(ctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(after+1), clientv3.WithPrevKV())
		send := func(b Batch) bool {
			select {
			case out <- b:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for wr := range wch {
			if err := wr.Err(); err != nil {
				if wr.CompactRevision != 0 || err == rpctypes.ErrCompacted {
					err = fmt.Errorf("watch after revision %d: %w", after, ErrCompacted)
				} else {
					err = fmt.Errorf("watch after revision %d: %w", after, err)
				}
				send(Batch{Revision: after, Err: err})
				return
			}
			var cur *Batch
			for _, ev := range wr.Events {
				e, ok, err := s.decodeEvent(ev)
				if err != nil {
					send(Batch{Revision: after, Err: err})
					return
				}
				if !ok {
					continue
				}
				rev := ev.Kv.ModRevision
				if cur != nil && cur.Revision != rev {
					if !send(*cur) {
						return
					}
					cur = nil
				}
				if cur == nil {
					cur = &Batch{Revision: rev}
				}
				cur.Events = append(cur.Events, e)
				after = rev
			}
			if cur != nil && !send(*cur) {
				return
			}
		}
		if ctx.Err() == nil {
			send(Batch{Revision: after, Err: fmt.Errorf("watch after revision %d: channel closed", after)})
		}
	}()
	return out
}

// decodeEvent turns a raw event into an Event; ok is false for keys that
// are not objects (indexes, data, keys of other packages).
func (s *Store) decodeEvent(ev *clientv3.Event) (Event, bool, error) {
	rest := strings.TrimPrefix(string(ev.Kv.Key), s.prefix)
	kindName, id, found := strings.Cut(rest, "/")
	if !found || id == "" {
		return Event{}, false, nil
	}
	var k Kind
	switch kindName {
	case "secrets":
		k = KindSecret
	case "services":
		k = KindService
	case "nodes":
		k = KindNode
	default:
		return Event{}, false, nil
	}
	e := Event{Kind: k, ID: id, Deleted: ev.Type == mvccpb.DELETE}
	kv := ev.Kv
	if e.Deleted {
		if ev.PrevKv == nil {
			return e, true, nil
		}
		kv = ev.PrevKv
	}
	var err error
	switch k {
	case KindSecret:
		e.Secret, err = decodeSecret(kv)
	case KindService:
		e.Service, err = decodeService(kv)
	case KindNode:
		e.Node, err = decodeNode(kv)
	}
	return e, true, err
}
