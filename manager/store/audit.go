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

// Audit retention. The log keeps two classes of entries, each with a
// budget of its own (counts, not ages, so that a burst, such as a service
// placed on every node, cannot grow etcd without bound):
//
//   - node-reported entries: what a node's agent said it did (mount,
//     wipe, live-update, live-update.failed) and what a manager concluded
//     from it (wipe.reconciled), recorded by the dispatcher under the
//     node's certificate identity (AppendNodeAudit);
//   - every other entry: what admins, the admin socket and managers did
//     (secret.*, service.*, node.*, join-token.*, unlock-key.*,
//     data-key.rotate, kek.rotate, admin-credentials.*, grant, revoke,
//     audit.dropped).
//
// A worker may send reports at its full budget (api/dispatcher:
// ReportBeatsPerPeriod × MaxMountReports, about 50 a second), and would so
// push every older entry out of a single count of 100,000 in about half an
// hour; with a budget per class, no number of node reports removes an
// entry that is not node-reported. Both defaults are 100,000 entries, the
// single count's before the split: others grow with what people and
// managers change (a grant entry per node and service whose grants
// change), node reports with container starts and stops; the log can so
// hold twice as many entries as before (an estimate, not measured: a few
// hundred bytes each, some tens of MiB of etcd). One node's reports can
// still push out other nodes' older reports: the node class is shared by
// every node.
const (
	// DefaultAuditRetention is how many entries that are not
	// node-reported the cluster keeps.
	DefaultAuditRetention = 100000
	// DefaultNodeAuditRetention is how many node-reported entries the
	// cluster keeps.
	DefaultNodeAuditRetention = 100000
)

// AuditRetention is how many entries of each class CompactAudit keeps.
type AuditRetention struct {
	// Others: entries that are not node-reported.
	Others int
	// NodeReported: entries appended by AppendNodeAudit.
	NodeReported int
}

// DefaultAuditRetentions is the retention managers compact to.
func DefaultAuditRetentions() AuditRetention {
	return AuditRetention{Others: DefaultAuditRetention, NodeReported: DefaultNodeAuditRetention}
}

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

// auditClass is which retention budget an entry counts against; its key
// prefix says it (see doc.go), so compaction counts and cuts each class by
// key alone, never decoding a value.
type auditClass int

const (
	// auditOthers lives under audit/, the log's only prefix before node
	// reports got their own: entries written there before (node reports
	// included) are listed and compacted as others, where they sit.
	auditOthers auditClass = iota
	// auditNode lives under audit-node/: entries AppendNodeAudit wrote.
	auditNode
)

// auditClasses is every class, in the order ListAudit reads them.
var auditClasses = []auditClass{auditOthers, auditNode}

// auditPrefix is where class c of the audit log lives; see doc.go. Both
// prefixes end in "/" and neither is a prefix of the other, so a range of
// one never reaches into the other.
func (s *Store) auditPrefix(c auditClass) string {
	if c == auditNode {
		return s.prefix + "audit-node/"
	}
	return s.prefix + "audit/"
}

// auditSuffix is the part of an entry's key below its class prefix: time
// (fixed-width nanoseconds since the epoch, so byte order is time order),
// then ID. It is the same shape in every class, so the log's order is the
// byte order of suffixes whatever the class, and a suffix is the page
// token ListAudit hands back.
func auditSuffix(t time.Time, id string) string {
	return fmt.Sprintf("%020d-%s", t.UnixNano(), id)
}

// auditPut returns the ops that append e (ID and time filled in when
// unset) to class c only if its suffix is new in every class: an entry is
// never overwritten, and a (time, ID) names one entry of the whole log (a
// page token is a suffix, so two entries with one suffix could not both be
// paged past).
func (s *Store) auditPut(c auditClass, e *types.AuditEntry) ([]clientv3.Cmp, clientv3.Op, error) {
	if e.Id == "" {
		e.Id = identity.NewID()
	}
	if e.Time == nil {
		e.Time = s.timestamp()
	}
	if !validRef(e.Id) {
		return nil, clientv3.Op{}, errorf(ErrInvalid, "audit entry ID %q is not valid", e.Id)
	}
	b, err := proto.Marshal(e)
	if err != nil {
		return nil, clientv3.Op{}, fmt.Errorf("encode audit entry: %w", err)
	}
	suffix := auditSuffix(e.Time.AsTime(), e.Id)
	cmps := make([]clientv3.Cmp, 0, len(auditClasses))
	for _, o := range auditClasses {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.auditPrefix(o)+suffix), "=", 0))
	}
	return cmps, clientv3.OpPut(s.auditPrefix(c)+suffix, string(b)), nil
}

// auditOps is what a write made under WithAuditActor adds to its
// transaction: compares and a put of the entry; none without an actor.
func (s *Store) auditOps(ctx context.Context, action, kind, id, name string) ([]clientv3.Cmp, []clientv3.Op, error) {
	actor, ok := auditActor(ctx)
	if !ok {
		return nil, nil, nil
	}
	cmps, op, err := s.auditPut(auditOthers, &types.AuditEntry{Actor: actor, Action: action, ObjectKind: kind, ObjectId: id, ObjectName: name})
	if err != nil {
		return nil, nil, err
	}
	return cmps, []clientv3.Op{op}, nil
}

// MaxAuditAppend bounds the entries of one AppendAudit (one etcd
// transaction: etcd refuses more than 128 compares or operations by
// default, and each entry compares its suffix absent in both classes).
const MaxAuditAppend = 64

// AppendAudit appends entries that are not node-reported (managers' and
// admins') to the audit log in one transaction, all or none. The store
// fills in an ID and the time of an entry that has none; if any entry's
// key exists already, nothing is written and the error is ErrExists: the
// log has no update. An entry naming a node as its actor is refused: a
// node's reports go through AppendNodeAudit, so that they can never count
// against, and so push out, the entries of everyone else.
func (s *Store) AppendAudit(ctx context.Context, entries ...*types.AuditEntry) error {
	for _, e := range entries {
		if strings.HasPrefix(e.GetActor(), AuditActorNode("")) {
			return errorf(ErrInvalid, "audit entry by %s: node-reported entries are appended with AppendNodeAudit", quoteShort(e.GetActor()))
		}
	}
	return s.appendAudit(ctx, auditOthers, entries)
}

// AppendNodeAudit appends what node nodeID reported, or what a manager
// concluded from its reports, in one transaction, all or none, as
// AppendAudit does. These entries have a retention budget of their own
// (AuditRetention.NodeReported). The caller names the node from its
// certificate (the dispatcher), never from what the node sent; every
// entry's actor must be AuditActorNode(nodeID) and its node nodeID.
func (s *Store) AppendNodeAudit(ctx context.Context, nodeID string, entries ...*types.AuditEntry) error {
	if !validRef(nodeID) {
		return errorf(ErrInvalid, "node ID %q is not valid", nodeID)
	}
	actor := AuditActorNode(nodeID)
	for _, e := range entries {
		if e.GetActor() != actor || e.GetNodeId() != nodeID {
			return errorf(ErrInvalid, "audit entry by %s about node %s appended as node %s's report",
				quoteShort(e.GetActor()), quoteShort(e.GetNodeId()), nodeID)
		}
	}
	return s.appendAudit(ctx, auditNode, entries)
}

func (s *Store) appendAudit(ctx context.Context, c auditClass, entries []*types.AuditEntry) error {
	if len(entries) > MaxAuditAppend {
		return errorf(ErrInvalid, "%d audit entries in one append; at most %d", len(entries), MaxAuditAppend)
	}
	cmps := make([]clientv3.Cmp, 0, len(entries)*len(auditClasses))
	ops := make([]clientv3.Op, 0, len(entries))
	for _, e := range entries {
		cmp, op, err := s.auditPut(c, proto.Clone(e).(*types.AuditEntry))
		if err != nil {
			return err
		}
		cmps, ops = append(cmps, cmp...), append(ops, op)
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
// oldest first (then by ID), whatever their class, starting after the page
// token after (empty: the first page). next is the token of the following
// page, empty at the end. A token is the key suffix of a page's last
// entry (auditSuffix), the same in every class, so the merged listing
// resumes in both classes just after it; tokens handed out before node
// reports had a class of their own stay valid.
func (s *Store) ListAudit(ctx context.Context, since time.Time, after string, limit int) (entries []*types.AuditEntry, next string, err error) {
	if limit <= 0 || limit > MaxAuditPage {
		limit = MaxAuditPage
	}
	from := "" // the least suffix listed
	if !since.IsZero() {
		from = fmt.Sprintf("%020d", since.UnixNano())
	}
	if after != "" {
		if strings.ContainsAny(after, "/\x00") {
			return nil, "", errorf(ErrInvalid, "audit page token %q is not valid", after)
		}
		if k := after + "\x00"; k > from {
			from = k
		}
	}
	// Up to limit entries of each class, read at one revision, merged by
	// suffix: the first limit of the merge are the page.
	type run struct {
		prefix string
		kvs    []*mvccpb.KeyValue
	}
	runs := make([]run, 0, len(auditClasses))
	more := false
	var rev int64
	for _, c := range auditClasses {
		p := s.auditPrefix(c)
		opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(p)), clientv3.WithLimit(int64(limit))}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, p+from, opts...)
		if err != nil {
			return nil, "", fmt.Errorf("list audit log: %w", err)
		}
		rev = resp.Header.Revision
		more = more || resp.More
		runs = append(runs, run{prefix: p, kvs: resp.Kvs})
	}
	page := make([]*mvccpb.KeyValue, 0, limit)
	last := ""
	for len(page) < limit {
		best, bestSuffix := -1, ""
		for i, r := range runs {
			if len(r.kvs) == 0 {
				continue
			}
			if sfx := strings.TrimPrefix(string(r.kvs[0].Key), r.prefix); best < 0 || sfx < bestSuffix {
				best, bestSuffix = i, sfx
			}
		}
		if best < 0 {
			break
		}
		page = append(page, runs[best].kvs[0])
		runs[best].kvs = runs[best].kvs[1:]
		last = bestSuffix
	}
	for _, r := range runs {
		more = more || len(r.kvs) > 0
	}
	entries, err = decodeAll(page, decodeAudit)
	if err != nil {
		return nil, "", err
	}
	if more && len(page) > 0 {
		next = last
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

// CompactAudit removes, in each class, the oldest entries beyond that
// class's budget in r, and returns how many went. It counts and cuts by
// key only. One manager runs it (the etcd leader's); running it on several
// at once is harmless, since each removes only a range of the oldest keys
// of a class.
func (s *Store) CompactAudit(ctx context.Context, r AuditRetention) (int, error) {
	if r.Others <= 0 || r.NodeReported <= 0 {
		return 0, errorf(ErrInvalid, "audit retention %d others, %d node-reported: both must be positive", r.Others, r.NodeReported)
	}
	removed := 0
	for _, c := range auditClasses {
		keep := r.Others
		if c == auditNode {
			keep = r.NodeReported
		}
		n, err := s.compactAuditClass(ctx, s.auditPrefix(c), keep)
		removed += n
		if err != nil {
			return removed, err
		}
	}
	return removed, nil
}

// compactAuditClass removes the oldest entries under prefix p beyond keep.
func (s *Store) compactAuditClass(ctx context.Context, p string, keep int) (int, error) {
	end := clientv3.GetPrefixRangeEnd(p)
	cnt, err := s.cli.Get(ctx, p, clientv3.WithRange(end), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("count audit log %s: %w", p, err)
	}
	excess := cnt.Count - int64(keep)
	if excess <= 0 {
		return 0, nil
	}
	// The key of the excess-th oldest entry: everything up to it goes.
	last, err := s.cli.Get(ctx, p, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(excess),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return 0, fmt.Errorf("read audit log %s: %w", p, err)
	}
	if len(last.Kvs) == 0 {
		return 0, nil
	}
	upTo := string(last.Kvs[len(last.Kvs)-1].Key) + "\x00"
	del, err := s.cli.Delete(ctx, p, clientv3.WithRange(upTo))
	if err != nil {
		return 0, fmt.Errorf("compact audit log %s: %w", p, err)
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
