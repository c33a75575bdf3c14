package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/identity"
)

func decodeSecret(kv *mvccpb.KeyValue) (*types.Secret, error) {
	sec := &types.Secret{}
	if err := proto.Unmarshal(kv.Value, sec); err != nil {
		return nil, fmt.Errorf("decode secret at %s: %w", kv.Key, err)
	}
	if sec.Meta == nil {
		sec.Meta = &types.Meta{}
	}
	sec.Meta.Version = uint64(kv.ModRevision)
	return sec, nil
}

// CreateSecret seals data and stores a new secret under spec.Name. The
// caller has validated spec and data; the caller still owns data (and
// zeroes it). It fails with ErrNameConflict when the name is taken.
func (s *Store) CreateSecret(ctx context.Context, spec *types.SecretSpec, data []byte) (*types.Secret, error) {
	// The name becomes part of a key: keep it from reaching other keys
	// even if a caller skipped validation.
	if !validRef(spec.GetName()) {
		return nil, errorf(ErrInvalid, "secret name %q is not valid", spec.GetName())
	}
	now := s.timestamp()
	sec := &types.Secret{
		Id:     identity.NewID(),
		Meta:   &types.Meta{CreatedAt: now, UpdatedAt: now},
		Spec:   proto.Clone(spec).(*types.SecretSpec),
		Size:   int64(len(data)),
		Digest: s.sealer.Digest(data),
	}
	val, err := marshal(sec, sec.Meta)
	if err != nil {
		return nil, err
	}
	nameCmps, namePuts, nameReads := s.nameKeys("secrets", spec.Name, sec.Id)
	auditCmps, auditPuts, err := s.auditOps(ctx, AuditSecretCreate, "secret", sec.Id, spec.Name)
	if err != nil {
		return nil, err
	}
	nameCmps, namePuts = append(nameCmps, auditCmps...), append(namePuts, auditPuts...)
	for attempt := 1; ; attempt++ {
		if err := s.indexFoldedNames(ctx); err != nil {
			return nil, err
		}
		sealed, fence, err := s.seal(data, s.recordAD(s.secretDataKey(sec.Id)))
		if err != nil {
			return nil, fmt.Errorf("seal secret '%s': %w", spec.GetName(), err)
		}
		resp, err := s.cli.Txn(ctx).
			If(append(fence, nameCmps...)...).
			Then(append(namePuts,
				clientv3.OpPut(s.secretKey(sec.Id), string(val)),
				clientv3.OpPut(s.secretDataKey(sec.Id), string(sealed)),
			)...).
			Else(nameReads...).
			Commit()
		if err != nil {
			return nil, fmt.Errorf("create secret '%s': %w", spec.Name, err)
		}
		if resp.Succeeded {
			sec.Meta.Version = uint64(resp.Header.Revision)
			return sec, nil
		}
		switch err := s.nameTaken(ctx, s.secretKind(), spec.Name, resp.Responses); {
		case errors.Is(err, errReindex) && attempt < maxFenceRetries:
			continue
		case err != nil:
			return nil, err
		}
		// The data keys changed while we sealed: seal again under the new ones.
		if attempt == maxFenceRetries {
			return nil, fmt.Errorf("create secret '%s': the data keys kept changing; retry", spec.Name)
		}
		if err := s.refresh(ctx); err != nil {
			return nil, err
		}
	}
}

// GetSecret returns the secret named by a full ID, a name or a unique ID
// prefix. It never returns data.
func (s *Store) GetSecret(ctx context.Context, ref string) (*types.Secret, error) {
	kv, err := s.lookup(ctx, s.secretKind(), ref)
	if err != nil {
		return nil, err
	}
	return decodeSecret(kv)
}

// ListSecrets returns every secret, ordered by ID.
func (s *Store) ListSecrets(ctx context.Context) ([]*types.Secret, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"secrets/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	return decodeAll(resp.Kvs, decodeSecret)
}

// SecretData opens and returns the data of secret id. The caller zeroes
// the returned slice when done with it.
func (s *Store) SecretData(ctx context.Context, id string) ([]byte, error) {
	if !validRef(id) {
		return nil, errorf(ErrNotFound, "secret '%s' not found", id)
	}
	resp, err := s.cli.Get(ctx, s.secretDataKey(id))
	if err != nil {
		return nil, fmt.Errorf("read data of secret %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, errorf(ErrNotFound, "secret '%s' not found", id)
	}
	data, err := s.sealer.OpenRecord(resp.Kvs[0].Value, s.recordAD(s.secretDataKey(id)))
	if err != nil {
		return nil, fmt.Errorf("open data of secret %s: %w", id, err)
	}
	return data, nil
}

// UpdateSecret replaces the labels of secret ref if its version is still
// version. A secret's name and data never change.
func (s *Store) UpdateSecret(ctx context.Context, ref string, version uint64, spec *types.SecretSpec) (*types.Secret, error) {
	kv, err := s.lookup(ctx, s.secretKind(), ref)
	if err != nil {
		return nil, err
	}
	sec, err := decodeSecret(kv)
	if err != nil {
		return nil, err
	}
	if spec.GetName() != "" && spec.GetName() != sec.Spec.GetName() {
		return nil, errorf(ErrInvalid, "secret '%s' cannot be renamed; only its labels can be updated", sec.Spec.GetName())
	}
	if sec.Meta.Version != version {
		return nil, versionConflict("secret", sec.Spec.GetName(), version)
	}
	sec.Spec.Labels = spec.GetLabels()
	sec.Meta.UpdatedAt = s.timestamp()
	val, err := marshal(sec, sec.Meta)
	if err != nil {
		return nil, err
	}
	key := s.secretKey(sec.Id)
	auditCmps, auditPuts, err := s.auditOps(ctx, AuditSecretUpdate, "secret", sec.Id, sec.Spec.GetName())
	if err != nil {
		return nil, err
	}
	resp, err := s.cli.Txn(ctx).
		If(append(auditCmps, clientv3.Compare(clientv3.ModRevision(key), "=", int64(version)))...).
		Then(append(auditPuts, clientv3.OpPut(key, string(val)))...).
		Commit()
	if err != nil {
		return nil, fmt.Errorf("update secret '%s': %w", sec.Spec.GetName(), err)
	}
	if !resp.Succeeded {
		return nil, s.notFoundOr(ctx, key, "secret", sec.Spec.GetName(), version)
	}
	sec.Meta.Version = uint64(resp.Header.Revision)
	return sec, nil
}

// RemoveSecret removes secret ref and its data unless a service references
// it; the reference check and the delete are one transaction.
func (s *Store) RemoveSecret(ctx context.Context, ref string) error {
	kv, err := s.lookup(ctx, s.secretKind(), ref)
	if err != nil {
		return err
	}
	sec, err := decodeSecret(kv)
	if err != nil {
		return err
	}
	key, refs := s.secretKey(sec.Id), s.refPrefix(sec.Id)
	auditCmps, auditPuts, err := s.auditOps(ctx, AuditSecretRemove, "secret", sec.Id, sec.Spec.GetName())
	if err != nil {
		return err
	}
	resp, err := s.cli.Txn(ctx).
		If(append([]clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(key), ">", 0),
			// No key under refs/<id>/: compare on a range holds when it
			// holds for every key in it, and for the zero value when the
			// range is empty.
			clientv3.Compare(clientv3.CreateRevision(refs), "=", 0).WithPrefix(),
		}, auditCmps...)...).
		Then(append(append(s.nameDeletes("secrets", sec.Spec.GetName(), sec.Id),
			clientv3.OpDelete(key),
			clientv3.OpDelete(s.secretDataKey(sec.Id)),
		), auditPuts...)...).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly()), clientv3.OpGet(refs, clientv3.WithPrefix(), clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return fmt.Errorf("remove secret '%s': %w", sec.Spec.GetName(), err)
	}
	if resp.Succeeded {
		return nil
	}
	if len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
		return errorf(ErrNotFound, "secret '%s' not found", sec.Spec.GetName())
	}
	var serviceIDs []string
	for _, r := range resp.Responses[1].GetResponseRange().Kvs {
		serviceIDs = append(serviceIDs, strings.TrimPrefix(string(r.Key), refs))
	}
	return &InUseError{Secret: sec.Spec.GetName(), Services: s.serviceNames(ctx, serviceIDs)}
}

// serviceNames maps service IDs to names for messages, falling back to the
// ID when a service cannot be read.
func (s *Store) serviceNames(ctx context.Context, ids []string) []string {
	names := make([]string, 0, len(ids))
	for _, id := range ids {
		name := id
		if resp, err := s.cli.Get(ctx, s.serviceKey(id)); err == nil && len(resp.Kvs) == 1 {
			if svc, err := decodeService(resp.Kvs[0]); err == nil {
				name = svc.Spec.GetName()
			}
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Reseal re-seals, with the sealer's current key, the data of every
// secret for which needs(sealed) is true, and returns how many it
// rewrote. Each rewrite compares the data key's revision, so a secret
// removed meanwhile is skipped, never resurrected. It is safe to run again
// after a crash: already re-sealed data no longer needs it.
func (s *Store) Reseal(ctx context.Context, needs func(sealed []byte) bool) (int, error) {
	const page = 100
	n := 0
	start := s.prefix + "secretdata/"
	end := clientv3.GetPrefixRangeEnd(start)
	for {
		resp, err := s.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithLimit(page))
		if err != nil {
			return n, fmt.Errorf("reseal: list secret data: %w", err)
		}
		for _, kv := range resp.Kvs {
			if !needs(kv.Value) {
				continue
			}
			ok, err := s.resealOne(ctx, kv)
			if err != nil {
				return n, err
			}
			if ok {
				n++
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return n, nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// resealOne rewrites one data key under the current keys, unless it
// changed or went meanwhile (then ok is false).
func (s *Store) resealOne(ctx context.Context, kv *mvccpb.KeyValue) (ok bool, err error) {
	for attempt := 1; ; attempt++ {
		ad := s.recordAD(string(kv.Key))
		plain, err := s.sealer.OpenRecord(kv.Value, ad)
		if err != nil {
			return false, fmt.Errorf("reseal: open %s: %w", kv.Key, err)
		}
		sealed, fence, err := s.seal(plain, ad)
		clear(plain)
		if err != nil {
			return false, fmt.Errorf("reseal: seal %s: %w", kv.Key, err)
		}
		key := string(kv.Key)
		tr, err := s.cli.Txn(ctx).
			If(append(fence, clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision))...).
			Then(clientv3.OpPut(key, string(sealed))).
			Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).
			Commit()
		if err != nil {
			return false, fmt.Errorf("reseal: write %s: %w", key, err)
		}
		if tr.Succeeded {
			return true, nil
		}
		kvs := tr.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 || kvs[0].ModRevision != kv.ModRevision {
			return false, nil // removed or rewritten meanwhile
		}
		if attempt == maxFenceRetries {
			return false, fmt.Errorf("reseal %s: the data keys kept changing", key)
		}
		if err := s.refresh(ctx); err != nil {
			return false, err
		}
	}
}

// recordAD is the associated data that binds a sealed value to the
// record at key: the key below the store's prefix ("secretdata/<id>"), so
// a backup restored under another prefix still opens. Secret IDs are
// random and never reused, and a secret's data never changes, so the key
// names one record and one version of it.
func (s *Store) recordAD(key string) []byte {
	return []byte(strings.TrimPrefix(key, s.prefix))
}

func decodeAll[T any](kvs []*mvccpb.KeyValue, decode func(*mvccpb.KeyValue) (T, error)) ([]T, error) {
	out := make([]T, 0, len(kvs))
	for _, kv := range kvs {
		v, err := decode(kv)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func versionConflict(noun, name string, version uint64) error {
	return errorf(ErrVersionConflict, "%s '%s' was changed since version %d was read; read it again and retry", noun, name, version)
}

// notFoundOr explains a failed compare on key's mod revision.
func (s *Store) notFoundOr(ctx context.Context, key, noun, name string, version uint64) error {
	resp, err := s.cli.Get(ctx, key, clientv3.WithKeysOnly())
	if err == nil && len(resp.Kvs) == 0 {
		return errorf(ErrNotFound, "%s '%s' not found", noun, name)
	}
	return versionConflict(noun, name, version)
}
