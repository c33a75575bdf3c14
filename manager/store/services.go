package store

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/identity"
)

func decodeService(kv *mvccpb.KeyValue) (*types.Service, error) {
	svc := &types.Service{}
	if err := proto.Unmarshal(kv.Value, svc); err != nil {
		return nil, fmt.Errorf("decode service at %s: %w", kv.Key, err)
	}
	if svc.Meta == nil {
		svc.Meta = &types.Meta{}
	}
	if svc.Spec == nil {
		svc.Spec = &types.ServiceSpec{}
	}
	svc.Meta.Version = uint64(kv.ModRevision)
	return svc, nil
}

// resolveRefs fills SecretId and SecretName of every reference of spec: a
// reference names its secret by ID (secret_id) or by name (secret_name).
// The existence checked here is checked again in the write transaction.
func (s *Store) resolveRefs(ctx context.Context, spec *types.ServiceSpec) error {
	for _, ref := range spec.Secrets {
		var key string
		if ref.SecretId != "" {
			if !validRef(ref.SecretId) {
				return errorf(ErrUnknownSecret, "secret '%s' not found", ref.SecretId)
			}
			key = s.secretKey(ref.SecretId)
		} else {
			if !validRef(ref.SecretName) {
				return errorf(ErrUnknownSecret, "secret '%s' not found", ref.SecretName)
			}
			idx, err := s.cli.Get(ctx, s.nameKey("secrets", ref.SecretName))
			if err != nil {
				return fmt.Errorf("resolve secret '%s': %w", ref.SecretName, err)
			}
			if len(idx.Kvs) == 0 {
				return errorf(ErrUnknownSecret, "secret '%s' not found", ref.SecretName)
			}
			key = s.secretKey(string(idx.Kvs[0].Value))
		}
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("resolve secret reference: %w", err)
		}
		if len(resp.Kvs) == 0 {
			name := ref.SecretName
			if ref.SecretId != "" {
				name = ref.SecretId
			}
			return errorf(ErrUnknownSecret, "secret '%s' not found", name)
		}
		sec, err := decodeSecret(resp.Kvs[0])
		if err != nil {
			return err
		}
		ref.SecretId, ref.SecretName = sec.Id, sec.Spec.GetName()
	}
	return nil
}

// secretIDs returns the distinct secret IDs spec references.
func secretIDs(spec *types.ServiceSpec) map[string]string {
	ids := make(map[string]string, len(spec.GetSecrets()))
	for _, r := range spec.GetSecrets() {
		ids[r.SecretId] = r.SecretName
	}
	return ids
}

// refChecks compares every referenced secret present, and explains a
// failure through reads in the Else branch.
func (s *Store) refChecks(ids map[string]string) (cmps []clientv3.Cmp, elseOps []clientv3.Op, order []string) {
	for id := range ids {
		key := s.secretKey(id)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), ">", 0))
		elseOps = append(elseOps, clientv3.OpGet(key, clientv3.WithKeysOnly()))
		order = append(order, id)
	}
	return cmps, elseOps, order
}

// missingSecret names the first referenced secret whose Else read came back
// empty, or "" when all exist.
func missingSecret(resps []*etcdserverpb.ResponseOp, ids map[string]string, order []string) string {
	for i, id := range order {
		if len(resps[i].GetResponseRange().Kvs) == 0 {
			return ids[id]
		}
	}
	return ""
}

// CreateService stores a new service. Every secret it references must
// exist (ErrUnknownSecret otherwise, checked in the write itself) and the
// name must be free (ErrNameConflict).
func (s *Store) CreateService(ctx context.Context, spec *types.ServiceSpec) (*types.Service, error) {
	if !validRef(spec.GetName()) {
		return nil, errorf(ErrInvalid, "service name %q is not valid", spec.GetName())
	}
	spec = proto.Clone(spec).(*types.ServiceSpec)
	if err := s.resolveRefs(ctx, spec); err != nil {
		return nil, err
	}
	now := s.timestamp()
	svc := &types.Service{Id: identity.NewID(), Meta: &types.Meta{CreatedAt: now, UpdatedAt: now}, Spec: spec}
	val, err := marshal(svc, svc.Meta)
	if err != nil {
		return nil, err
	}
	ids := secretIDs(spec)
	cmps, elseOps, order := s.refChecks(ids)
	nameCmps, namePuts, nameReads := s.nameKeys("services", spec.Name, svc.Id)
	cmps = append(cmps, nameCmps...)
	elseOps = append(elseOps, nameReads...)
	ops := append(namePuts, clientv3.OpPut(s.serviceKey(svc.Id), string(val)))
	for id := range ids {
		ops = append(ops, clientv3.OpPut(s.refKey(id, svc.Id), ""))
	}
	auditCmps, auditPuts, err := s.auditOps(ctx, AuditServiceCreate, "service", svc.Id, spec.Name)
	if err != nil {
		return nil, err
	}
	cmps, ops = append(cmps, auditCmps...), append(ops, auditPuts...)
	for attempt := 1; ; attempt++ {
		if err := s.indexFoldedNames(ctx); err != nil {
			return nil, err
		}
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Else(elseOps...).Commit()
		if err != nil {
			return nil, fmt.Errorf("create service '%s': %w", spec.Name, err)
		}
		if resp.Succeeded {
			svc.Meta.Version = uint64(resp.Header.Revision)
			return svc, nil
		}
		if name := missingSecret(resp.Responses, ids, order); name != "" {
			return nil, errorf(ErrUnknownSecret, "secret '%s' not found", name)
		}
		switch err := s.nameTaken(ctx, s.serviceKind(), spec.Name, resp.Responses[len(order):]); {
		case errors.Is(err, errReindex) && attempt < 2:
			continue // the marker went: backfill, then once more
		case err != nil:
			return nil, err
		}
		return nil, errorf(ErrNameConflict, "service '%s' already exists", spec.Name)
	}
}

// GetService returns the service named by a full ID, a name or a unique ID
// prefix.
func (s *Store) GetService(ctx context.Context, ref string) (*types.Service, error) {
	kv, err := s.lookup(ctx, s.serviceKind(), ref)
	if err != nil {
		return nil, err
	}
	return decodeService(kv)
}

// ListServices returns every service, ordered by ID.
func (s *Store) ListServices(ctx context.Context) ([]*types.Service, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"services/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	return decodeAll(resp.Kvs, decodeService)
}

// UpdateService replaces the spec of service ref if its version is still
// version. The name cannot change. The reference index follows the new
// spec in the same transaction.
func (s *Store) UpdateService(ctx context.Context, ref string, version uint64, spec *types.ServiceSpec) (*types.Service, error) {
	kv, err := s.lookup(ctx, s.serviceKind(), ref)
	if err != nil {
		return nil, err
	}
	old, err := decodeService(kv)
	if err != nil {
		return nil, err
	}
	name := old.Spec.GetName()
	if spec.GetName() != "" && spec.GetName() != name {
		return nil, errorf(ErrInvalid, "service '%s' cannot be renamed", name)
	}
	if old.Meta.Version != version {
		return nil, versionConflict("service", name, version)
	}
	spec = proto.Clone(spec).(*types.ServiceSpec)
	spec.Name = name
	if err := s.resolveRefs(ctx, spec); err != nil {
		return nil, err
	}
	svc := &types.Service{
		Id:   old.Id,
		Meta: &types.Meta{CreatedAt: old.Meta.GetCreatedAt(), UpdatedAt: s.timestamp()},
		Spec: spec,
	}
	val, err := marshal(svc, svc.Meta)
	if err != nil {
		return nil, err
	}
	key := s.serviceKey(svc.Id)
	ids := secretIDs(spec)
	cmps, elseOps, order := s.refChecks(ids)
	cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", int64(version)))
	ops := []clientv3.Op{clientv3.OpPut(key, string(val))}
	for id := range ids {
		ops = append(ops, clientv3.OpPut(s.refKey(id, svc.Id), ""))
	}
	for id := range secretIDs(old.Spec) {
		if _, kept := ids[id]; !kept {
			ops = append(ops, clientv3.OpDelete(s.refKey(id, svc.Id)))
		}
	}
	auditCmps, auditPuts, err := s.auditOps(ctx, AuditServiceUpdate, "service", svc.Id, name)
	if err != nil {
		return nil, err
	}
	cmps, ops = append(cmps, auditCmps...), append(ops, auditPuts...)
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Else(elseOps...).Commit()
	if err != nil {
		return nil, fmt.Errorf("update service '%s': %w", name, err)
	}
	if !resp.Succeeded {
		if missing := missingSecret(resp.Responses, ids, order); missing != "" {
			return nil, errorf(ErrUnknownSecret, "secret '%s' not found", missing)
		}
		return nil, s.notFoundOr(ctx, key, "service", name, version)
	}
	svc.Meta.Version = uint64(resp.Header.Revision)
	return svc, nil
}

// RemoveService removes service ref and its references.
func (s *Store) RemoveService(ctx context.Context, ref string) error {
	for {
		kv, err := s.lookup(ctx, s.serviceKind(), ref)
		if err != nil {
			return err
		}
		svc, err := decodeService(kv)
		if err != nil {
			return err
		}
		key := s.serviceKey(svc.Id)
		ops := append(s.nameDeletes("services", svc.Spec.GetName(), svc.Id), clientv3.OpDelete(key))
		for id := range secretIDs(svc.Spec) {
			ops = append(ops, clientv3.OpDelete(s.refKey(id, svc.Id)))
		}
		// Its container rows go with it (service ps has nothing to show);
		// the nodes' index entries go when the containers are wiped.
		ops = append(ops, clientv3.OpDelete(s.containerPrefix(svc.Id), clientv3.WithPrefix()))
		auditCmps, auditPuts, err := s.auditOps(ctx, AuditServiceRemove, "service", svc.Id, svc.Spec.GetName())
		if err != nil {
			return err
		}
		resp, err := s.cli.Txn(ctx).
			If(append(auditCmps, clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision))...).
			Then(append(ops, auditPuts...)...).Commit()
		if err != nil {
			return fmt.Errorf("remove service '%s': %w", svc.Spec.GetName(), err)
		}
		if resp.Succeeded {
			return nil
		}
		// Changed (its references may differ) or removed meanwhile: look
		// again so the right reference keys go.
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
