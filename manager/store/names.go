package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Secret and service names are unique without regard to case, as in
// swarm, whose name index holds strings.ToLower(name): "DB_pw" is refused
// while "db_pw" exists, and a lookup by name that matches no name exactly
// finds the one that matches without case. The exact-name index
// (names/<kind>/<name>) stays as it was; the folded index
// (names/<kind>-nocase/<lower-cased name>) is the uniqueness rule. Names
// are ASCII (api/validation), so lower-casing is strings.ToLower.

// foldedKindSuffix names the folded index of a kind: names/secrets-nocase/.
const foldedKindSuffix = "-nocase"

// foldedNamesMarker says the folded index holds every secret and service
// recorded before it existed.
const foldedNamesMarker = "names/nocase-indexed"

func (s *Store) foldedNameKey(kind, name string) string {
	return s.nameKey(kind+foldedKindSuffix, strings.ToLower(name))
}

// nameKeys are the index entries a new object of kind named name creates,
// with the compares that keep both free (and the backfill marker present:
// see indexFoldedNames), and the reads that explain a failure, for
// nameTaken.
func (s *Store) nameKeys(kind, name, id string) (cmps []clientv3.Cmp, puts, reads []clientv3.Op) {
	exact, folded, marker := s.nameKey(kind, name), s.foldedNameKey(kind, name), s.prefix+foldedNamesMarker
	cmps = []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(exact), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(folded), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(marker), ">", 0),
	}
	puts = []clientv3.Op{clientv3.OpPut(exact, id), clientv3.OpPut(folded, id)}
	reads = []clientv3.Op{clientv3.OpGet(exact, clientv3.WithKeysOnly()), clientv3.OpGet(folded), clientv3.OpGet(marker, clientv3.WithCountOnly())}
	return cmps, puts, reads
}

// errReindex says a create failed because the folded index's marker is
// gone: backfill again and retry.
var errReindex = errors.New("folded name index needs a backfill")

// nameDeletes removes an object's index entries: the exact one, and the
// folded one only while it is the object's (two objects recorded before
// the folded index may share a folded name; the survivor keeps it).
func (s *Store) nameDeletes(kind, name, id string) []clientv3.Op {
	folded := s.foldedNameKey(kind, name)
	return []clientv3.Op{
		clientv3.OpDelete(s.nameKey(kind, name)),
		clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Value(folded), "=", id)},
			[]clientv3.Op{clientv3.OpDelete(folded)}, nil),
	}
}

// nameTaken explains a failed create from the three reads of nameKeys
// (resps): errReindex when the backfill marker is gone, a name conflict
// when the exact name exists or another object holds it without regard
// to case, nil when neither (the failure was something else).
func (s *Store) nameTaken(ctx context.Context, k kind, name string, resps []*etcdserverpb.ResponseOp) error {
	if resps[2].GetResponseRange().GetCount() == 0 {
		s.foldedIndexed.Store(false)
		return errReindex
	}
	exact, folded := firstValue(resps[0]), firstValue(resps[1])
	if exact == nil && folded == nil {
		return nil
	}
	if exact == nil {
		holder := string(folded)
		if resp, err := s.cli.Get(ctx, k.objPrefix+holder); err == nil && len(resp.Kvs) == 1 {
			if n := objectName(k, resp.Kvs[0].Value); n != "" {
				holder = n
			}
		}
		return errorf(ErrNameConflict, "%s '%s' already exists: names compare without regard to case, as in swarm, and %s '%s' has this one", k.noun, name, k.noun, holder)
	}
	return errorf(ErrNameConflict, "%s '%s' already exists", k.noun, name)
}

// indexFoldedNames brings secrets and services recorded before the folded
// index existed into it, once per cluster (the marker says it was done).
// Of two legacy objects whose names differ only in case, the first keeps
// the folded entry; both keep their exact names, so both stay reachable,
// and a new object of that name is refused either way.
func (s *Store) indexFoldedNames(ctx context.Context) error {
	if s.foldedIndexed.Load() {
		return nil
	}
	marker := s.prefix + foldedNamesMarker
	resp, err := s.cli.Get(ctx, marker, clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("read name index: %w", err)
	}
	if resp.Count > 0 {
		s.foldedIndexed.Store(true)
		return nil
	}
	for _, k := range []kind{s.secretKind(), s.serviceKind()} {
		objs, err := s.cli.Get(ctx, k.objPrefix, clientv3.WithPrefix())
		if err != nil {
			return fmt.Errorf("index %s names: %w", k.noun, err)
		}
		for _, kv := range objs.Kvs {
			id := strings.TrimPrefix(string(kv.Key), k.objPrefix)
			name := objectName(k, kv.Value)
			if name == "" {
				continue
			}
			folded := s.foldedNameKey(k.nameIndex, name)
			// Only while the object is still there, and only if no one
			// holds the folded name yet.
			if _, err := s.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.CreateRevision(folded), "=", 0),
					clientv3.Compare(clientv3.ModRevision(string(kv.Key)), ">", 0)).
				Then(clientv3.OpPut(folded, id)).Commit(); err != nil {
				return fmt.Errorf("index name of %s %s: %w", k.noun, id, err)
			}
		}
	}
	if _, err := s.cli.Put(ctx, marker, ""); err != nil {
		return fmt.Errorf("write name index marker: %w", err)
	}
	s.foldedIndexed.Store(true)
	return nil
}

// objectName decodes the name of a secret or service record ("" when it
// cannot be read).
func objectName(k kind, val []byte) string {
	kv := &mvccpb.KeyValue{Value: val}
	switch k.nameIndex {
	case "secrets":
		if sec, err := decodeSecret(kv); err == nil {
			return sec.Spec.GetName()
		}
	case "services":
		if svc, err := decodeService(kv); err == nil {
			return svc.Spec.GetName()
		}
	}
	return ""
}

// firstValue is the value of the first key a range read returned, nil
// when it returned none.
func firstValue(r *etcdserverpb.ResponseOp) []byte {
	if kvs := r.GetResponseRange().GetKvs(); len(kvs) > 0 {
		if kvs[0].Value == nil {
			return []byte{}
		}
		return kvs[0].Value
	}
	return nil
}
