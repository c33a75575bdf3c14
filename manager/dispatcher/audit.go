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
	AppendAudit(ctx context.Context, entries ...*types.AuditEntry) error
}

// auditQueue bounds the grant entries waiting to be written: a burst (a
// service placed on every node) is written in the background, so fan-out
// never waits for etcd; what does not fit is counted and reported as one
// AuditDropped entry.
const auditQueue = 8192

// grantLog remembers, per node, the grants the dispatcher last sent it: by
// service, the sorted names of its secrets. An audit entry is made only
// when that changes (not per message, not per reconnect), so the log grows
// with what nodes are given, not with traffic. It also answers "grants
// held" for node ls.
type grantLog struct {
	mu   sync.Mutex
	sent map[string]map[string]grantSet // node ID → service ID → grants

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
	g := &grantLog{sent: map[string]map[string]grantSet{}, actor: store.AuditActorManager(nodeID)}
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
	now := map[string]grantSet{}
	for id, s := range v {
		now[id] = grantsOf(s)
	}
	gl.mu.Lock()
	defer gl.mu.Unlock()
	before := gl.sent[nodeID]
	gl.sent[nodeID] = now
	for id, g := range now {
		if old, ok := before[id]; !ok || !old.same(g) {
			gl.enqueue(&types.AuditEntry{Action: store.AuditGrant, ObjectKind: "service", ObjectId: id, ObjectName: g.name, NodeId: nodeID, Secrets: g.secrets})
		}
	}
	for id, g := range before {
		if _, ok := now[id]; !ok {
			gl.enqueue(&types.AuditEntry{Action: store.AuditRevoke, ObjectKind: "service", ObjectId: id, ObjectName: g.name, NodeId: nodeID, Secrets: g.secrets})
		}
	}
}

// noteChanges is note for a fan-out, which moves only the services in cs:
// its cost follows the change, not the size of the node's view.
func (gl *grantLog) noteChanges(nodeID string, cs []change) {
	gl.mu.Lock()
	defer gl.mu.Unlock()
	m := gl.sent[nodeID]
	if m == nil {
		m = map[string]grantSet{}
		gl.sent[nodeID] = m
	}
	for _, c := range cs {
		if c.service == nil {
			continue
		}
		id := c.service.GetId()
		if c.remove {
			if old, ok := m[id]; ok {
				delete(m, id)
				gl.enqueue(&types.AuditEntry{Action: store.AuditRevoke, ObjectKind: "service", ObjectId: id, ObjectName: old.name, NodeId: nodeID, Secrets: old.secrets})
			}
			continue
		}
		g := grantsOf(c.service)
		old, ok := m[id]
		m[id] = g
		if !ok || !old.same(g) {
			gl.enqueue(&types.AuditEntry{Action: store.AuditGrant, ObjectKind: "service", ObjectId: id, ObjectName: g.name, NodeId: nodeID, Secrets: g.secrets})
		}
	}
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
	m, ok := gl.sent[nodeID]
	n := 0
	for _, g := range m {
		n += len(g.secrets)
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
