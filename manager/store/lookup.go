package store

import (
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// kind describes one object kind's keys for lookups.
type kind struct {
	noun      string // "secret", "service", "node": used in messages
	objPrefix string // <prefix><noun>s/
	nameIndex string // names/<nameIndex>/ or "" when the kind has no name index
}

func (s *Store) secretKind() kind {
	return kind{noun: "secret", objPrefix: s.prefix + "secrets/", nameIndex: "secrets"}
}
func (s *Store) serviceKind() kind {
	return kind{noun: "service", objPrefix: s.prefix + "services/", nameIndex: "services"}
}
func (s *Store) nodeKind() kind { return kind{noun: "node", objPrefix: s.prefix + "nodes/"} }

// lookup finds the object that ref names, in swarm's order: a full ID, then
// a name (exact, then without regard to case), then a unique ID prefix.
// It returns the object's key-value.
func (s *Store) lookup(ctx context.Context, k kind, ref string) (*mvccpb.KeyValue, error) {
	if !validRef(ref) {
		return nil, errorf(ErrNotFound, "%s '%s' not found", k.noun, ref)
	}
	ops := []clientv3.Op{clientv3.OpGet(k.objPrefix + ref)}
	if k.nameIndex != "" {
		ops = append(ops, clientv3.OpGet(s.nameKey(k.nameIndex, ref)), clientv3.OpGet(s.foldedNameKey(k.nameIndex, ref)))
	}
	// The reads in one transaction so they see one revision.
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("look up %s %q: %w", k.noun, ref, err)
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		return kvs[0], nil
	}
	// The exact name first, then the name without regard to case (swarm's
	// lookup by name is case-insensitive; see names.go).
	for i := 1; k.nameIndex != "" && i <= 2; i++ {
		if kvs := resp.Responses[i].GetResponseRange().Kvs; len(kvs) == 1 {
			obj, err := s.cli.Get(ctx, k.objPrefix+string(kvs[0].Value))
			if err != nil {
				return nil, fmt.Errorf("look up %s %q: %w", k.noun, ref, err)
			}
			if len(obj.Kvs) == 1 {
				return obj.Kvs[0], nil
			}
			// Removed between the two reads: fall through to not found.
		}
	}
	pre, err := s.cli.Get(ctx, k.objPrefix+ref, clientv3.WithPrefix(), clientv3.WithLimit(2))
	if err != nil {
		return nil, fmt.Errorf("look up %s %q: %w", k.noun, ref, err)
	}
	switch len(pre.Kvs) {
	case 0:
		return nil, errorf(ErrNotFound, "%s '%s' not found", k.noun, ref)
	case 1:
		return pre.Kvs[0], nil
	default:
		return nil, errorf(ErrAmbiguous, "%s '%s' is ambiguous: it is the prefix of several IDs; give more characters or the name", k.noun, ref)
	}
}
