package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/store"
)

// Store is what the dispatcher reads and writes in the store.
type Store interface {
	Snapshot(ctx context.Context) (*store.Snapshot, error)
	Watch(ctx context.Context, after int64) <-chan store.Batch
	SecretData(ctx context.Context, id string) ([]byte, error)
	UpdateNode(ctx context.Context, id string, fn func(*types.Node) error) (*types.Node, error)
}

// HistoryReader reads services and a node as they were at a past
// revision, to resume a session; ok is false when that revision is gone
// (manager/store.Store implements it: the store owns the history reads).
type HistoryReader interface {
	ViewInputsAt(ctx context.Context, rev int64, nodeID string) (services []*types.Service, node *types.Node, ok bool, err error)
}

// Config configures a Dispatcher.
type Config struct {
	Store   Store
	History HistoryReader // nil: every session starts COMPLETE
	// Managers lists the manager addresses sent in every message.
	Managers func() []string
	// HeartbeatPeriod is the period agents are told; a node silent for
	// three periods is marked down. Default 5s.
	HeartbeatPeriod time.Duration
	// BatchWindow is how long watch batches are gathered before fan-out.
	// Default 2ms.
	BatchWindow time.Duration
	Logger      *slog.Logger
	// Audit, when set, receives an entry each time a node is sent a
	// service's grants or told to drop them (grantLog, audit.go), written
	// in the background.
	Audit Auditor
	// NodeID is this manager's node ID: the actor of those entries.
	NodeID string
	// Containers, when set, keeps the agents' reports of each container
	// (reports.go): what `lockbox service ps` lists.
	Containers ContainerTable
}

// Dispatcher fans store changes out to node sessions.
type Dispatcher struct {
	dapi.UnimplementedDispatcherServer

	cfg Config
	log *slog.Logger

	// mu guards ix and sessions; the run loop holds it while it computes
	// views, attach holds it to take a consistent first view.
	mu       sync.Mutex
	ix       *index
	sessions map[string]*session // by node ID
	ready    chan struct{}
	// advanced is closed and replaced whenever ix.rev moves.
	advanced chan struct{}

	// interned holds the views sessions attached with, by content, while
	// the services of index internedIx are at generation internedGen.
	interned    map[string]view
	internedIx  *index
	internedGen int64
	// starting holds a token per session starting (startSlots).
	starting chan struct{}
	// completes holds the shared changes of COMPLETE messages, by
	// interned view (first.go).
	completes map[uintptr]*completeSet
	// completeTTL is how long an unused set is kept (completeTTL; tests
	// shorten it).
	completeTTL time.Duration
	// lastRevHead is the encoded type and revision last sent (revHeader).
	lastRevHead atomic.Pointer[revHead]

	hb           heartbeats
	grants       *grantLog
	reportBudget reportBudget

	metrics *metrics
}

// New returns a Dispatcher; Run must be running for sessions to be served.
func New(cfg Config) *Dispatcher {
	if cfg.HeartbeatPeriod == 0 {
		cfg.HeartbeatPeriod = 5 * time.Second
	}
	if cfg.BatchWindow == 0 {
		cfg.BatchWindow = 2 * time.Millisecond
	}
	if cfg.Managers == nil {
		cfg.Managers = func() []string { return nil }
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Dispatcher{cfg: cfg, log: log, sessions: map[string]*session{}, ready: make(chan struct{}), advanced: make(chan struct{}), hb: heartbeats{seen: map[string]*nodeBeat{}}, grants: newGrantLog(cfg.NodeID, cfg.Audit != nil), metrics: newMetrics(), completeTTL: completeTTL, starting: make(chan struct{}, startSlots)}
}

// ErrNodeRemoved ends the session of a node that left the store.
var ErrNodeRemoved = status.Error(codes.PermissionDenied, "this node was removed from the cluster")

// ErrRevoked ends the session of a node whose certificate was revoked.
var ErrRevoked = status.Error(codes.PermissionDenied, "this node's certificate was revoked")

// Run follows the store until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) error {
	go d.reapLoop(ctx)
	go d.auditLoop(ctx)
	first := true
	for {
		snap, err := d.cfg.Store.Snapshot(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d.log.Warn("dispatcher: snapshot failed; retrying", "err", err)
			if !sleepCtx(ctx, time.Second) {
				return ctx.Err()
			}
			continue
		}
		d.resync(ctx, newIndex(snap))
		if first {
			close(d.ready)
			first = false
		}
		err = d.follow(ctx, snap.Revision)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d.log.Warn("dispatcher: watch ended; taking a new snapshot", "err", err)
	}
}

// WaitIndexed waits until the index includes revision rev (of an object
// key: revisions of other keys are never seen by the dispatcher).
func (d *Dispatcher) WaitIndexed(ctx context.Context, rev int64) error {
	select {
	case <-d.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	for {
		d.mu.Lock()
		cur, ch := d.ix.rev, d.advanced
		d.mu.Unlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// advance signals WaitIndexed callers; d.mu must be held.
func (d *Dispatcher) advance() {
	close(d.advanced)
	d.advanced = make(chan struct{})
}

// Ready is closed once the first snapshot is loaded.
func (d *Dispatcher) Ready() <-chan struct{} { return d.ready }

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// follow applies watch batches until the watch fails.
func (d *Dispatcher) follow(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := d.cfg.Store.Watch(wctx, rev)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var b store.Batch
		var ok bool
		select {
		case b, ok = <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			return errors.New("watch closed")
		}
		if b.Err != nil {
			return b.Err
		}
		// The fan-out's latency is measured from here: the event has
		// reached the manager.
		since := time.Now()
		d.mu.Lock()
		dl := &delta{services: map[string]bool{}, nodes: map[string]bool{}}
		d.ix.apply(b, dl)
		d.advance()
		d.mu.Unlock()
		// Gather what else arrives in the window: one fan-out for a burst.
		timer.Reset(d.cfg.BatchWindow)
	gather:
		for {
			select {
			case b, ok = <-ch:
				if !ok {
					break gather
				}
				if b.Err != nil {
					d.fanOut(ctx, dl, since)
					return b.Err
				}
				d.mu.Lock()
				d.ix.apply(b, dl)
				d.advance()
				d.mu.Unlock()
			case <-timer.C:
				break gather
			}
		}
		timer.Stop()
		d.fanOut(ctx, dl, since)
		if !ok {
			return errors.New("watch closed")
		}
	}
}

// pendingUpdate is one session's move in one fan-out.
type pendingUpdate struct {
	s  *session
	mv *move
}

// fanOut turns a delta into queued changes on every affected session.
// since is when the watch event that started it arrived (zero for a
// resync).
func (d *Dispatcher) fanOut(ctx context.Context, dl *delta, since time.Time) {
	if dl.empty() {
		return
	}
	d.mu.Lock()
	rev := d.ix.rev
	changed := make([]string, 0, len(dl.services))
	for id := range dl.services {
		changed = append(changed, id)
	}
	cache := newMoveCache()
	var moves []*move // distinct, in the order first seen
	work := make([]pendingUpdate, 0, len(d.sessions))
	need := map[string]bool{}
	for nodeID, s := range d.sessions {
		n := d.ix.nodes[nodeID]
		if n == nil {
			s.end(ErrNodeRemoved)
			delete(d.sessions, nodeID)
			d.grants.forget(nodeID)
			d.reportBudget.forget(nodeID)
			continue
		}
		var mv *move
		if dl.nodes[nodeID] {
			// Interned as at attach: a node event the fan-out reaches
			// after the session attached (its own creation, a label
			// change that moves nothing) must not take it off the view it
			// shares with the nodes of its placement.
			nv := d.intern(viewOf(d.ix.services, n, s.caps))
			mv = &move{view: nv, changes: diff(s.view, nv)}
		} else if mv = cache.moveOf(s.view, n, s.caps, d.ix.services, changed); mv == nil {
			continue
		}
		s.view = mv.view
		d.grants.noteMove(nodeID, mv.view, mv.changes)
		if len(mv.changes) == 0 {
			continue
		}
		if !mv.built {
			mv.built = true
			moves = append(moves, mv)
			for _, c := range mv.changes {
				if !c.remove && c.secretID != "" {
					need[c.secretID] = true
				}
			}
		}
		work = append(work, pendingUpdate{s: s, mv: mv})
	}
	d.mu.Unlock()
	if len(work) == 0 {
		return
	}

	// One store read per secret; each change is encoded once and its bytes
	// shared by every session that sends it.
	data := make(map[string][]byte, len(need))
	for id := range need {
		b, err := d.cfg.Store.SecretData(ctx, id)
		if err != nil {
			d.log.Warn("dispatcher: cannot read secret data", "secret", id, "err", err)
			continue
		}
		data[id] = b
	}
	cc := changeCache{}
	for _, mv := range moves {
		mv.items, mv.err = cc.build(mv.changes, data)
	}
	for _, w := range work {
		if w.mv.err != nil {
			// The node must not miss a change: make it reconnect, and
			// resume or start over from a fresh read.
			w.s.end(status.Error(codes.Unavailable, w.mv.err.Error()))
			continue
		}
		for _, it := range w.mv.items {
			it.change.Ref() // the session's own, released once sent
		}
		w.s.push(rev, w.mv.items)
	}
	d.metrics.observeFanOut(since)
	// The encodings hold the only copies of the data now; sessions hold
	// their references until sent.
	for _, mv := range moves {
		for _, it := range mv.items {
			it.release()
		}
		mv.items = nil
	}
	cc.release()
	for _, b := range data {
		clear(b)
	}
}

// item is a queued change: its shared encoding, one reference held.
type item struct {
	change mem.Buffer
}

func (it item) release() {
	if it.change != nil {
		it.change.Free()
	}
}

// changeCache encodes each distinct change once per fan-out (or first
// message); it holds one reference on each encoding until released.
type changeCache map[change]mem.Buffer

func buildChanges(cs []change, data map[string][]byte) ([]item, error) {
	cc := changeCache{}
	defer cc.release()
	return cc.build(cs, data)
}

func (cc changeCache) release() {
	for _, b := range cc {
		b.Free()
	}
	clear(cc)
}

func (cc changeCache) build(cs []change, data map[string][]byte) ([]item, error) {
	out := make([]item, 0, len(cs))
	fail := func(err error) ([]item, error) {
		for _, it := range out {
			it.release()
		}
		return nil, err
	}
	for _, c := range cs {
		enc := cc[c]
		if enc == nil {
			var plain []byte
			withData := !c.remove && c.service == nil
			if withData {
				var ok bool
				if plain, ok = data[c.secretID]; !ok {
					return fail(fmt.Errorf("data of secret %s is not readable now; reconnect", c.secretID))
				}
			}
			var err error
			if enc, err = encodeChange(newChange(c, plain), withData); err != nil {
				return fail(fmt.Errorf("secret %s: %w", c.secretID, err))
			}
			cc[c] = enc
		}
		enc.Ref()
		out = append(out, item{change: enc})
	}
	return out, nil
}

func newChange(c change, data []byte) *dapi.AssignmentChange {
	action := dapi.AssignmentChange_UPDATE
	if c.remove {
		action = dapi.AssignmentChange_REMOVE
	}
	ac := &dapi.AssignmentChange{Action: action}
	switch {
	case c.service != nil && c.remove:
		ac.Assignment = &dapi.Assignment{Item: &dapi.Assignment_Service{Service: &dapi.ServiceGrants{ServiceId: c.service.Id, ServiceName: c.service.GetSpec().GetName()}}}
	case c.service != nil:
		ac.Assignment = &dapi.Assignment{Item: &dapi.Assignment_Service{Service: serviceGrants(c.service)}}
	case c.remove:
		ac.Assignment = &dapi.Assignment{Item: &dapi.Assignment_Secret{Secret: &dapi.SecretData{Id: c.secretID, Name: c.name}}}
	default:
		ac.Assignment = &dapi.Assignment{Item: &dapi.Assignment_Secret{Secret: &dapi.SecretData{Id: c.secretID, Name: c.name, Data: data}}}
	}
	return ac
}

// serviceGrants is a service as its nodes receive it: its references and
// its claim rules, which the agent checks at each claim. The rules travel
// as the admin API stored them (validated, canonical); the agent parses
// them again and refuses every claim of a service whose rules it cannot
// read.
func serviceGrants(s *types.Service) *dapi.ServiceGrants {
	g := &dapi.ServiceGrants{ServiceId: s.Id, ServiceName: s.GetSpec().GetName(), ClaimRules: s.GetSpec().GetClaimRules(), LiveUpdate: s.GetSpec().GetLiveUpdate()}
	for _, ref := range s.GetSpec().GetSecrets() {
		g.Grants = append(g.Grants, &dapi.Grant{SecretId: ref.GetSecretId(), SecretName: ref.GetSecretName(), Target: ref.GetTarget(), Signal: ref.GetSignal()})
	}
	return g
}

// resync replaces the index (first start, or after a compacted watch) and
// moves every session to its view in the new index.
func (d *Dispatcher) resync(ctx context.Context, ix *index) {
	d.mu.Lock()
	d.ix = ix
	d.advance()
	dl := &delta{services: map[string]bool{}, nodes: map[string]bool{}}
	for id := range d.sessions {
		dl.nodes[id] = true
	}
	d.mu.Unlock()
	d.fanOut(ctx, dl, time.Time{})
}

// EndSession ends the session of nodeID (revocation).
func (d *Dispatcher) EndSession(nodeID string, err error) {
	d.mu.Lock()
	s := d.sessions[nodeID]
	delete(d.sessions, nodeID)
	d.mu.Unlock()
	if s != nil {
		s.end(err)
	}
}

// ManagersChanged sends every session a message carrying the new manager
// list, so agents learn of managers that joined or left.
func (d *Dispatcher) ManagersChanged() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.sessions {
		s.poke()
	}
}

// Sessions is the number of connected nodes.
func (d *Dispatcher) Sessions() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.sessions)
}
