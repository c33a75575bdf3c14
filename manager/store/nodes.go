package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/identity"
)

func decodeNode(kv *mvccpb.KeyValue) (*types.Node, error) {
	n := &types.Node{}
	if err := proto.Unmarshal(kv.Value, n); err != nil {
		return nil, fmt.Errorf("decode node at %s: %w", kv.Key, err)
	}
	if n.Meta == nil {
		n.Meta = &types.Meta{}
	}
	if n.Spec == nil {
		n.Spec = &types.NodeSpec{}
	}
	n.Meta.Version = uint64(kv.ModRevision)
	return n, nil
}

// CreateNode stores a new node. The CA chooses node.Id (it is in the
// node's certificate); an empty Id gets a new random one. The description
// is the one the node gave when it joined: it must pass
// ValidateNodeDescription (ErrInvalid), and a worker's hostname must not be
// held by another worker (ErrNameConflict, naming that node), since
// placement constraints on node.hostname select by it. It fails with
// ErrNameConflict too when a node with that ID exists.
//
// Only workers are held to a unique hostname: they are what an untrusted
// join token makes, and what receives grants. Managers are trusted (their
// token reaches the data key) and may share a host with one another and
// with that host's agent.
func (s *Store) CreateNode(ctx context.Context, node *types.Node) (*types.Node, error) {
	n := proto.Clone(node).(*types.Node)
	if n.Id == "" {
		n.Id = identity.NewID()
	}
	if !validRef(n.Id) {
		return nil, errorf(ErrInvalid, "node ID %q is not valid", n.Id)
	}
	if err := ValidateNodeDescription(n.Description); err != nil {
		return nil, err
	}
	now := s.timestamp()
	n.Meta = &types.Meta{CreatedAt: now, UpdatedAt: now}
	if n.Spec == nil {
		n.Spec = &types.NodeSpec{}
	}
	n.Reported = nil
	val, err := marshal(n, n.Meta)
	if err != nil {
		return nil, err
	}
	key := s.nodeKey(n.Id)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
	ops := []clientv3.Op{clientv3.OpPut(key, string(val))}
	hkey := ""
	if uniqueHostname(n) {
		if err := s.indexHostnames(ctx); err != nil {
			return nil, err
		}
		hkey = s.hostnameKey(n.GetDescription().GetHostname())
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(hkey), "=", 0))
		ops = append(ops, clientv3.OpPut(hkey, n.Id))
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("create node %s: %w", n.Id, err)
	}
	if !resp.Succeeded {
		if hkey != "" {
			if holder, err := s.cli.Get(ctx, hkey); err == nil && len(holder.Kvs) > 0 && string(holder.Kvs[0].Value) != n.Id {
				return nil, hostnameTaken(n.GetDescription().GetHostname(), string(holder.Kvs[0].Value))
			}
		}
		return nil, errorf(ErrNameConflict, "node '%s' already exists", n.Id)
	}
	n.Meta.Version = uint64(resp.Header.Revision)
	return n, nil
}

func hostnameTaken(hostname, holder string) error {
	return errorf(ErrNameConflict, "hostname '%s' is already used by node %s: remove that node first ('lockbox node rm %s') or give this host another hostname", hostname, holder, holder)
}

// uniqueHostname reports whether n claims its hostname in the hostname
// index: a worker with a hostname.
func uniqueHostname(n *types.Node) bool {
	return n.GetRole() != types.NodeRole_NODE_ROLE_MANAGER && n.GetDescription().GetHostname() != ""
}

// hostnameKey is the index entry of a worker hostname; hostnames compare
// without case, as DNS and constraints do.
func (s *Store) hostnameKey(hostname string) string {
	return s.nameKey("hostnames", strings.ToLower(hostname))
}

// indexHostnames brings nodes recorded before the hostname index existed
// into it, once per cluster (the marker key says it was done). A legacy
// node whose hostname another one already holds keeps its record but not
// the hostname: a later join of that hostname is refused either way.
func (s *Store) indexHostnames(ctx context.Context) error {
	marker := s.prefix + "names/hostnames-indexed"
	resp, err := s.cli.Get(ctx, marker, clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("read hostname index: %w", err)
	}
	if resp.Count > 0 {
		return nil
	}
	nodes, err := s.ListNodes(ctx)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if !uniqueHostname(n) {
			continue
		}
		hkey := s.hostnameKey(n.GetDescription().GetHostname())
		// Only while the node is still there, and only if no one holds
		// the hostname yet.
		if _, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(hkey), "=", 0),
				clientv3.Compare(clientv3.ModRevision(s.nodeKey(n.Id)), ">", 0)).
			Then(clientv3.OpPut(hkey, n.Id)).Commit(); err != nil {
			return fmt.Errorf("index hostname of node %s: %w", n.Id, err)
		}
	}
	if _, err := s.cli.Put(ctx, marker, ""); err != nil {
		return fmt.Errorf("write hostname index marker: %w", err)
	}
	return nil
}

// GetNode returns the node named by a full ID, a unique ID prefix or a
// hostname that only one node has.
func (s *Store) GetNode(ctx context.Context, ref string) (*types.Node, error) {
	kv, err := s.lookup(ctx, s.nodeKind(), ref)
	if err == nil {
		return decodeNode(kv)
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	// Nodes have no name index (hostnames need not be unique): scan.
	nodes, lerr := s.ListNodes(ctx)
	if lerr != nil {
		return nil, lerr
	}
	var found *types.Node
	for _, n := range nodes {
		if n.GetDescription().GetHostname() == ref {
			if found != nil {
				return nil, errorf(ErrAmbiguous, "several nodes have hostname '%s'; use the node ID", ref)
			}
			found = n
		}
	}
	if found == nil {
		return nil, err
	}
	return found, nil
}

// ListNodes returns every node, ordered by ID.
func (s *Store) ListNodes(ctx context.Context) ([]*types.Node, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"nodes/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return decodeAll(resp.Kvs, decodeNode)
}

// UpdateNodeSpec replaces the operator-set spec (labels) of node ref if its
// version is still version.
func (s *Store) UpdateNodeSpec(ctx context.Context, ref string, version uint64, spec *types.NodeSpec) (*types.Node, error) {
	n, err := s.GetNode(ctx, ref)
	if err != nil {
		return nil, err
	}
	if n.Meta.Version != version {
		return nil, versionConflict("node", n.Id, version)
	}
	n.Spec = proto.Clone(spec).(*types.NodeSpec)
	auditCmps, auditPuts, err := s.auditOps(ctx, AuditNodeUpdate, "node", n.Id, n.GetDescription().GetHostname())
	if err != nil {
		return nil, err
	}
	return s.putNode(ctx, n, version, auditCmps, auditPuts)
}

// UpdateNode applies fn to the current node id and writes the result,
// retrying when someone else wrote in between. It is for the manager's own
// writes (status, last seen, description, certificate), which have no
// version from a user. fn must not change the ID.
func (s *Store) UpdateNode(ctx context.Context, id string, fn func(*types.Node) error) (*types.Node, error) {
	if !validRef(id) {
		return nil, errorf(ErrNotFound, "node '%s' not found", id)
	}
	for {
		resp, err := s.cli.Get(ctx, s.nodeKey(id))
		if err != nil {
			return nil, fmt.Errorf("read node %s: %w", id, err)
		}
		if len(resp.Kvs) == 0 {
			return nil, errorf(ErrNotFound, "node '%s' not found", id)
		}
		n, err := decodeNode(resp.Kvs[0])
		if err != nil {
			return nil, err
		}
		version := n.Meta.Version
		if err := fn(n); err != nil {
			return nil, err
		}
		n.Id = id
		out, err := s.putNode(ctx, n, version, nil, nil)
		if errors.Is(err, ErrVersionConflict) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			continue
		}
		return out, err
	}
}

// putNode writes n if its version is still version, with extra compares
// and ops (an audit entry) in the same transaction.
func (s *Store) putNode(ctx context.Context, n *types.Node, version uint64, cmps []clientv3.Cmp, ops []clientv3.Op) (*types.Node, error) {
	if n.Meta == nil {
		n.Meta = &types.Meta{}
	}
	n.Meta.UpdatedAt = s.timestamp()
	val, err := marshal(n, n.Meta)
	if err != nil {
		return nil, err
	}
	key := s.nodeKey(n.Id)
	resp, err := s.cli.Txn(ctx).
		If(append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", int64(version)))...).
		Then(append(ops, clientv3.OpPut(key, string(val)))...).Commit()
	if err != nil {
		return nil, fmt.Errorf("update node %s: %w", n.Id, err)
	}
	if !resp.Succeeded {
		return nil, s.notFoundOr(ctx, key, "node", n.Id, version)
	}
	n.Meta.Version = uint64(resp.Header.Revision)
	return n, nil
}

// RemoveNode removes node ref from the store, and frees its hostname for
// another join. Revoking its certificate and ending its session is the
// caller's job.
func (s *Store) RemoveNode(ctx context.Context, ref string) (*types.Node, error) {
	n, err := s.GetNode(ctx, ref)
	if err != nil {
		return nil, err
	}
	del := clientv3.OpDelete(s.nodeKey(n.Id))
	// The entry is put whichever branch runs (its key is new: no compare).
	_, auditPuts, err := s.auditOps(ctx, AuditNodeRemove, "node", n.Id, n.GetDescription().GetHostname())
	if err != nil {
		return nil, err
	}
	txn := s.cli.Txn(ctx)
	if h := n.GetDescription().GetHostname(); h != "" {
		// The index entry goes with the node only if it is this node's.
		hkey := s.hostnameKey(h)
		txn = txn.If(clientv3.Compare(clientv3.Value(hkey), "=", n.Id)).
			Then(append([]clientv3.Op{del, clientv3.OpDelete(hkey)}, auditPuts...)...).
			Else(append([]clientv3.Op{del}, auditPuts...)...)
	} else {
		txn = txn.Then(append([]clientv3.Op{del}, auditPuts...)...)
	}
	resp, err := txn.Commit()
	if err != nil {
		return nil, fmt.Errorf("remove node %s: %w", n.Id, err)
	}
	if resp.Responses[0].GetResponseDeleteRange().GetDeleted() == 0 {
		return nil, errorf(ErrNotFound, "node '%s' not found", ref)
	}
	return n, nil
}
