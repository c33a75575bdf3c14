package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/identity"
	"github.com/lockbox-project/lockbox/manager/store"
)

// Auditor appends to the cluster's audit log (manager/store.Store).
type Auditor interface {
	// AppendAudit appends what this manager did (grants, revokes,
	// audit.dropped).
	AppendAudit(ctx context.Context, entries ...*types.AuditEntry) error
	// AppendNodeAudit appends what node nodeID reported (reports.go,
	// inventory.go), under the node's retention budget, so that no number
	// of reports can push the other entries out of the log. nodeID is
	// always the one the node's certificate names.
	AppendNodeAudit(ctx context.Context, nodeID string, entries ...*types.AuditEntry) error
}

// auditQueue bounds the grant entries waiting to be written: a burst (a
// service placed on every node) is written in the background, so fan-out
// never waits for etcd; what does not fit is counted and reported as one
// AuditDropped entry.
const auditQueue = 8192

// grantLog remembers, per node, the view the dispatcher last sent it. An
// audit entry is made only when a service's grants (its name and the sorted
// names of its secrets) change for a node (not per message, not per
// reconnect), so the log grows with what nodes are given, not with
// traffic. It also answers "grants held" for node ls.
//
// It keeps the views themselves, not a copy of their grants per node:
// views are shared by every node of one placement and never changed in
// place (the fan-out replaces them), so a node costs the log one map entry
// instead of a map of its services and their secret names (about half a
// kilobyte per connected agent; docs/performance.md, memory per agent).
type grantLog struct {
	mu   sync.Mutex
	sent map[string]view // node ID → the view last sent

	actor string
	queue chan *types.AuditEntry // nil: no audit log
	// dropped counts entries that did not fit in the queue.
	dropped int
}

type grantSet struct {
	name    string
	secrets []string // names, sorted
}

func (g grantSet) same(o grantSet) bool {
	return g.name == o.name && slices.Equal(g.secrets, o.secrets)
}

func newGrantLog(nodeID string, on bool) *grantLog {
	g := &grantLog{sent: map[string]view{}, actor: store.AuditActorManager(nodeID)}
	if on {
		g.queue = make(chan *types.AuditEntry, auditQueue)
	}
	return g
}

func grantsOf(s *types.Service) grantSet {
	g := grantSet{name: s.GetSpec().GetName()}
	for _, ref := range s.GetSpec().GetSecrets() {
		g.secrets = append(g.secrets, ref.GetSecretName())
	}
	slices.Sort(g.secrets)
	return g
}

// note records that nodeID now holds v, and queues an entry for every
// service whose grants it gained, changed or lost.
func (gl *grantLog) note(nodeID string, v view) {
	gl.mu.Lock()
	defer gl.mu.Unlock()
	before := gl.sent[nodeID]
	gl.sent[nodeID] = v
	for id, s := range v {
		gl.noteService(nodeID, before[id], s)
	}
	for id, old := range before {
		if _, ok := v[id]; !ok {
			gl.noteRevoke(nodeID, old)
		}
	}
}

// noteMove is note for a fan-out, which moves nodeID to v through cs: its
// cost follows the change, not the size of the node's view.
func (gl *grantLog) noteMove(nodeID string, v view, cs []change) {
	gl.mu.Lock()
	defer gl.mu.Unlock()
	before := gl.sent[nodeID]
	gl.sent[nodeID] = v
	for _, c := range cs {
		if c.service == nil {
			continue
		}
		old := before[c.service.GetId()]
		if c.remove {
			if old != nil {
				gl.noteRevoke(nodeID, old)
			}
			continue
		}
		gl.noteService(nodeID, old, c.service)
	}
}

// noteService queues a grant entry if s's grants differ from old's (nil:
// the node did not have the service). Must be called with gl.mu held.
func (gl *grantLog) noteService(nodeID string, old, s *types.Service) {
	if old == s {
		return
	}
	g := grantsOf(s)
	if old != nil && grantsOf(old).same(g) {
		return
	}
	gl.enqueue(&types.AuditEntry{Action: store.AuditGrant, ObjectKind: "service", ObjectId: s.GetId(), ObjectName: g.name, NodeId: nodeID, Secrets: g.secrets})
}

// noteRevoke queues a revoke entry for old. Must be called with gl.mu held.
func (gl *grantLog) noteRevoke(nodeID string, old *types.Service) {
	g := grantsOf(old)
	gl.enqueue(&types.AuditEntry{Action: store.AuditRevoke, ObjectKind: "service", ObjectId: old.GetId(), ObjectName: g.name, NodeId: nodeID, Secrets: g.secrets})
}

// forget drops a node that left the cluster.
func (gl *grantLog) forget(nodeID string) {
	gl.mu.Lock()
	delete(gl.sent, nodeID)
	gl.mu.Unlock()
}

// held is the number of grants (secret references) last sent to nodeID,
// and whether this manager has sent it any view.
func (gl *grantLog) held(nodeID string) (int, bool) {
	gl.mu.Lock()
	defer gl.mu.Unlock()
	v, ok := gl.sent[nodeID]
	n := 0
	for _, s := range v {
		n += len(s.GetSpec().GetSecrets())
	}
	return n, ok
}

// enqueue must be called with gl.mu held.
func (gl *grantLog) enqueue(e *types.AuditEntry) {
	if gl.queue == nil {
		return
	}
	// The time is fixed here (when the grants were queued for the node);
	// the ID when auditLoop takes the entry, off the fan-out's path.
	e.Actor = gl.actor
	e.Time = timestamppb.Now()
	select {
	case gl.queue <- e:
	default:
		gl.dropped++
	}
}

func (gl *grantLog) takeDropped() int {
	gl.mu.Lock()
	defer gl.mu.Unlock()
	n := gl.dropped
	gl.dropped = 0
	return n
}

// auditLoop writes queued entries, up to store.MaxAuditAppend per
// transaction, until ctx ends. A failed write is retried (the entries are
// kept) until it succeeds or ctx ends.
func (d *Dispatcher) auditLoop(ctx context.Context) {
	gl := d.grants
	if gl.queue == nil || d.cfg.Audit == nil {
		return
	}
	batch := make([]*types.AuditEntry, 0, store.MaxAuditAppend)
	for {
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return
			case e := <-gl.queue:
				batch = append(batch, withID(e))
			}
		}
	fill:
		for len(batch) < store.MaxAuditAppend-1 {
			select {
			case e := <-gl.queue:
				batch = append(batch, withID(e))
			default:
				break fill
			}
		}
		if n := gl.takeDropped(); n > 0 {
			batch = append(batch, &types.AuditEntry{Id: identity.NewID(), Actor: gl.actor, Action: store.AuditDropped, Time: timestamppb.Now(),
				ObjectName: fmt.Sprintf("%d grant entries were not recorded: the audit queue was full", n)})
		}
		if err := d.cfg.Audit.AppendAudit(ctx, batch...); err != nil {
			if ctx.Err() != nil {
				return
			}
			// Entries keep their IDs: a retry after a write that did
			// commit (the reply was lost) fails on ErrExists instead of
			// writing twice.
			if errors.Is(err, store.ErrExists) {
				batch = batch[:0]
				continue
			}
			d.log.Warn("dispatcher: cannot write audit entries; retrying", "entries", len(batch), "err", err)
			if !sleepCtx(ctx, time.Second) {
				return
			}
			continue
		}
		batch = batch[:0]
	}
}

// withID gives e its ID before its first write, so a retried write of the
// same entry is refused (ErrExists) instead of recorded twice.
func withID(e *types.AuditEntry) *types.AuditEntry {
	if e.Id == "" {
		e.Id = identity.NewID()
	}
	return e
}

// reportBudget allows each node dapi.ReportBeatsPerPeriod ×
// dapi.MaxMountReports reports per heartbeat period however often it
// beats: the log keeps a count of entries, and a node must not be able to
// push everyone else's out of it quickly.
type reportBudget struct {
	mu    sync.Mutex
	nodes map[string]*nodeBudget
	// limit is the reports per node and period; 0 is the default above.
	limit int
}

type nodeBudget struct {
	start time.Time
	used  int
}

func (b *reportBudget) take(nodeID string, n int, now time.Time, period time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.nodes == nil {
		b.nodes = map[string]*nodeBudget{}
	}
	nb := b.nodes[nodeID]
	if nb == nil || now.Sub(nb.start) >= period {
		nb = &nodeBudget{start: now}
		b.nodes[nodeID] = nb
	}
	limit := b.limit
	if limit == 0 {
		limit = dapi.ReportBeatsPerPeriod * dapi.MaxMountReports
	}
	if nb.used+n > limit {
		return false
	}
	nb.used += n
	return true
}

func (b *reportBudget) forget(nodeID string) {
	b.mu.Lock()
	delete(b.nodes, nodeID)
	b.mu.Unlock()
}
