package store

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/identity"
)

// Audit actions: the one home of the words AuditEntry.action takes.
const (
	AuditSecretCreate  = "secret.create"
	AuditSecretUpdate  = "secret.update"
	AuditSecretRemove  = "secret.remove"
	AuditServiceCreate = "service.create"
	AuditServiceUpdate = "service.update"
	AuditServiceRemove = "service.remove"
	AuditNodeUpdate    = "node.update"
	AuditNodeRemove    = "node.remove"
	// Cluster credentials and keys: who read or rotated them (never the
	// value). The object name of a join token entry is its role.
	AuditJoinTokenRead    = "join-token.read"
	AuditJoinTokenRotate  = "join-token.rotate"
	AuditUnlockKeyRead    = "unlock-key.read"
	AuditUnlockKeyRotate  = "unlock-key.rotate"
	AuditDataKeyRotate    = "data-key.rotate"
	AuditKEKRotate        = "kek.rotate"
	AuditAdminCredsIssue  = "admin-credentials.issue"
	AuditAdminCredsRevoke = "admin-credentials.revoke"
	// AuditGrant: a node was sent a service's grants (first time, or
	// with a changed set of secrets); AuditRevoke: the node was told to
	// drop them.
	AuditGrant  = "grant"
	AuditRevoke = "revoke"
	// AuditDropped: entries a manager could not record (its queue was
	// full); the entry's object_name says how many.
	AuditDropped = "audit.dropped"
)

// Audit actors that are not a certificate identity.
const (
	// AuditActorLocalRoot is a caller on the manager's root-only admin
	// socket, which carries no certificate.
	AuditActorLocalRoot = "local root"
)

// AuditActorManager is the actor of what manager nodeID's dispatcher did.
func AuditActorManager(nodeID string) string { return "manager " + nodeID }

// DefaultAuditRetention is how many audit entries the cluster keeps:
// CompactAudit removes the oldest beyond it. A count, not an age, so a
// burst (a service placed on every node) cannot grow etcd without bound.
const DefaultAuditRetention = 100000

// MaxAuditPage bounds one ListAudit page (gRPC message size).
const MaxAuditPage = 1000

type auditActorKey struct{}

// WithAuditActor returns a context under which the store's writes of
// secrets, services and node specs record an audit entry naming actor, in
// the same transaction as the change: no change commits without its
// entry. manager/admin sets it for every call it serves.
func WithAuditActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, auditActorKey{}, actor)
}

func auditActor(ctx context.Context) (string, bool) {
	a, ok := ctx.Value(auditActorKey{}).(string)
	return a, ok && a != ""
}

// auditPrefix is where the audit log lives; see doc.go.
func (s *Store) auditPrefix() string { return s.prefix + "audit/" }

// auditKey orders entries by time (fixed-width nanoseconds since the
// epoch, so byte order is time order), then ID.
func (s *Store) auditKey(t time.Time, id string) string {
	return fmt.Sprintf("%s%020d-%s", s.auditPrefix(), t.UnixNano(), id)
}

// auditPut returns the ops that append e (ID and time filled in when
// unset) only if its key is new: an entry is never overwritten.
func (s *Store) auditPut(e *types.AuditEntry) (clientv3.Cmp, clientv3.Op, error) {
	if e.Id == "" {
		e.Id = identity.NewID()
	}
	if e.Time == nil {
		e.Time = s.timestamp()
	}
	if !validRef(e.Id) {
		return clientv3.Cmp{}, clientv3.Op{}, errorf(ErrInvalid, "audit entry ID %q is not valid", e.Id)
	}
	b, err := proto.Marshal(e)
	if err != nil {
		return clientv3.Cmp{}, clientv3.Op{}, fmt.Errorf("encode audit entry: %w", err)
	}
	key := s.auditKey(e.Time.AsTime(), e.Id)
	return clientv3.Compare(clientv3.CreateRevision(key), "=", 0), clientv3.OpPut(key, string(b)), nil
}

// auditOps is what a write made under WithAuditActor adds to its
// transaction: a compare and a put of the entry; none without an actor.
func (s *Store) auditOps(ctx context.Context, action, kind, id, name string) ([]clientv3.Cmp, []clientv3.Op, error) {
	actor, ok := auditActor(ctx)
	if !ok {
		return nil, nil, nil
	}
	cmp, op, err := s.auditPut(&types.AuditEntry{Actor: actor, Action: action, ObjectKind: kind, ObjectId: id, ObjectName: name})
	if err != nil {
		return nil, nil, err
	}
	return []clientv3.Cmp{cmp}, []clientv3.Op{op}, nil
}

// MaxAuditAppend bounds the entries of one AppendAudit (one etcd
// transaction: etcd refuses more than 128 operations by default).
const MaxAuditAppend = 64

// AppendAudit appends entries to the audit log in one transaction, all or
// none. The store fills in an ID and the time of an entry that has none;
// if any entry's key exists already, nothing is written and the error is
// ErrExists: the log has no update.
func (s *Store) AppendAudit(ctx context.Context, entries ...*types.AuditEntry) error {
	if len(entries) > MaxAuditAppend {
		return errorf(ErrInvalid, "%d audit entries in one append; at most %d", len(entries), MaxAuditAppend)
	}
	cmps := make([]clientv3.Cmp, 0, len(entries))
	ops := make([]clientv3.Op, 0, len(entries))
	for _, e := range entries {
		cmp, op, err := s.auditPut(proto.Clone(e).(*types.AuditEntry))
		if err != nil {
			return err
		}
		cmps, ops = append(cmps, cmp), append(ops, op)
	}
	if len(ops) == 0 {
		return nil
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("append audit entries: %w", err)
	}
	if !resp.Succeeded {
		return errorf(ErrExists, "an audit entry exists already; entries are never rewritten")
	}
	return nil
}

// ListAudit returns up to limit entries not older than since (zero: all),
// oldest first, starting after the page token after (empty: the first
// page). next is the token of the following page, empty at the end.
func (s *Store) ListAudit(ctx context.Context, since time.Time, after string, limit int) (entries []*types.AuditEntry, next string, err error) {
	if limit <= 0 || limit > MaxAuditPage {
		limit = MaxAuditPage
	}
	start := s.auditPrefix()
	if !since.IsZero() {
		start = fmt.Sprintf("%s%020d", s.auditPrefix(), since.UnixNano())
	}
	if after != "" {
		if strings.ContainsAny(after, "/\x00") {
			return nil, "", errorf(ErrInvalid, "audit page token %q is not valid", after)
		}
		if k := s.auditPrefix() + after + "\x00"; k > start {
			start = k
		}
	}
	end := clientv3.GetPrefixRangeEnd(s.auditPrefix())
	resp, err := s.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return nil, "", fmt.Errorf("list audit log: %w", err)
	}
	entries, err = decodeAll(resp.Kvs, decodeAudit)
	if err != nil {
		return nil, "", err
	}
	if resp.More && len(resp.Kvs) > 0 {
		next = strings.TrimPrefix(string(resp.Kvs[len(resp.Kvs)-1].Key), s.auditPrefix())
	}
	return entries, next, nil
}

func decodeAudit(kv *mvccpb.KeyValue) (*types.AuditEntry, error) {
	e := &types.AuditEntry{}
	if err := proto.Unmarshal(kv.Value, e); err != nil {
		return nil, fmt.Errorf("decode audit entry at %s: %w", kv.Key, err)
	}
	return e, nil
}

// CompactAudit removes the oldest entries beyond keep and returns how many
// went. One manager runs it (the etcd leader's); running it on several at
// once is harmless, since each removes only a range of the oldest keys.
func (s *Store) CompactAudit(ctx context.Context, keep int) (int, error) {
	p := s.auditPrefix()
	end := clientv3.GetPrefixRangeEnd(p)
	cnt, err := s.cli.Get(ctx, p, clientv3.WithRange(end), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("count audit log: %w", err)
	}
	excess := cnt.Count - int64(keep)
	if excess <= 0 {
		return 0, nil
	}
	// The key of the excess-th oldest entry: everything up to it goes.
	last, err := s.cli.Get(ctx, p, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(excess),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return 0, fmt.Errorf("read audit log: %w", err)
	}
	if len(last.Kvs) == 0 {
		return 0, nil
	}
	upTo := string(last.Kvs[len(last.Kvs)-1].Key) + "\x00"
	del, err := s.cli.Delete(ctx, p, clientv3.WithRange(upTo))
	if err != nil {
		return 0, fmt.Errorf("compact audit log: %w", err)
	}
	return int(del.Deleted), nil
}

// Node mount reports (what an agent says it mounted or wiped) are what a
// node says, recorded as it says it: these rules bound them.
const (
	AuditMount = "mount"
	AuditWipe  = "wipe"
	// AuditWipeReconciled: a container's row was removed because its node's
	// inventory no longer lists it (its wipe report was lost): what the
	// manager concluded from the node's word, not a report of a wipe.
	AuditWipeReconciled = "wipe.reconciled"
	// AuditLiveUpdate: a live update changed a running container's files;
	// AuditLiveUpdateFailed: it could not, and the container keeps its
	// previous files (service ps shows why).
	AuditLiveUpdate       = "live-update"
	AuditLiveUpdateFailed = "live-update.failed"
	// MaxNodeReportSecrets bounds the secret names of one report.
	MaxNodeReportSecrets = 64
	// MaxNodeReportField bounds each name in a report.
	MaxNodeReportField = 256
)

// AuditActorNode is the actor of what node nodeID reported.
func AuditActorNode(nodeID string) string { return "node " + nodeID }

// ValidateNodeReport checks the names of one mount report: printable text,
// bounded in length and number.
func ValidateNodeReport(container, service string, secrets []string) error {
	if err := ValidateNodeContainerID(container); err != nil {
		return err
	}
	if len(secrets) > MaxNodeReportSecrets {
		return errorf(ErrInvalid, "a mount report may name at most %d secrets, not %d", MaxNodeReportSecrets, len(secrets))
	}
	for _, v := range append([]string{service}, secrets...) {
		if !validReportField(v) {
			return errorf(ErrInvalid, "mount report field %s is not valid: at most %d bytes of printable text", quoteShort(v), MaxNodeReportField)
		}
	}
	return nil
}

// ValidateNodeContainerID is the rule for a container ID a node names, in
// a mount report or in its inventory (ReconcileNodeContainers): not empty,
// printable text, at most MaxNodeReportField bytes.
func ValidateNodeContainerID(id string) error {
	if id == "" {
		return errorf(ErrInvalid, "a mount report names no container")
	}
	if !validReportField(id) {
		return errorf(ErrInvalid, "mount report field %s is not valid: at most %d bytes of printable text", quoteShort(id), MaxNodeReportField)
	}
	return nil
}

func validReportField(v string) bool {
	return len(v) <= MaxNodeReportField && utf8.ValidString(v) && allRunes(v, unicode.IsPrint)
}
