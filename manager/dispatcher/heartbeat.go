package dispatcher

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/store"
	"github.com/lockbox-project/lockbox/pki"
)

// heartbeats tracks when this manager last heard from each node.
type heartbeats struct {
	mu   sync.Mutex
	seen map[string]*nodeBeat
}

type nodeBeat struct {
	last time.Time
	// down is set once this manager marked the node down, so it does not
	// write again until the node is back.
	down bool
}

func (h *heartbeats) beat(nodeID string, t time.Time) (wasDown bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.seen[nodeID]
	if b == nil {
		h.seen[nodeID] = &nodeBeat{last: t}
		return false
	}
	wasDown = b.down
	b.last, b.down = t, false
	return wasDown
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// Heartbeat implements the Dispatcher RPC.
func (d *Dispatcher) Heartbeat(ctx context.Context, req *dapi.HeartbeatRequest) (*dapi.HeartbeatResponse, error) {
	who, err := pki.PeerIdentity(ctx)
	if err != nil || (who.Role != pki.RoleWorker && who.Role != pki.RoleManager) {
		return nil, status.Error(codes.PermissionDenied, "a heartbeat needs a node certificate")
	}
	if err := d.heartbeat(ctx, who.NodeID); err != nil {
		return nil, err
	}
	// Before any report is recorded: a refused inventory records none
	// (the agent sends them again) and removes nothing.
	if err := validateInventory(req.GetInventory()); err != nil {
		return nil, err
	}
	if err := d.recordReports(ctx, who.NodeID, req.GetReports()); err != nil {
		return nil, err
	}
	// After the reports: a wipe among them has removed its row, and a
	// container mounted after the agent took them is in neither.
	again := d.reconcileInventory(ctx, who.NodeID, req.GetInventory())
	return &dapi.HeartbeatResponse{PeriodMs: uint32(d.cfg.HeartbeatPeriod.Milliseconds()), SendInventory: again}, nil
}

// heartbeat records a beat; a node this manager had marked down is marked
// ready again. Beats are kept in memory: writing each to etcd would cost
// thousands of writes a second at scale.
func (d *Dispatcher) heartbeat(ctx context.Context, nodeID string) error {
	if !d.nodeKnown(nodeID) {
		return status.Errorf(codes.PermissionDenied, "node %s is not part of the cluster (removed?)", nodeID)
	}
	now := time.Now()
	if d.hb.beat(nodeID, now) {
		_, err := d.cfg.Store.UpdateNode(ctx, nodeID, func(n *types.Node) error {
			n.State = types.NodeState_NODE_STATE_READY
			n.LastSeen = timestamppb.New(now)
			return nil
		})
		if err != nil && !isNotFound(err) {
			return status.Errorf(codes.Unavailable, "record node %s: %v", nodeID, err)
		}
	}
	return nil
}

// reapLoop marks down the nodes silent for three heartbeat periods.
func (d *Dispatcher) reapLoop(ctx context.Context) {
	t := time.NewTicker(d.cfg.HeartbeatPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.reap(ctx, now)
		}
	}
}

func (d *Dispatcher) reap(ctx context.Context, now time.Time) {
	limit := 3 * d.cfg.HeartbeatPeriod
	var silent []string
	lastSeen := map[string]time.Time{}
	d.hb.mu.Lock()
	for id, b := range d.hb.seen {
		if !b.down && now.Sub(b.last) > limit {
			b.down = true
			silent = append(silent, id)
			lastSeen[id] = b.last
		}
	}
	d.hb.mu.Unlock()
	for _, id := range silent {
		last := lastSeen[id]
		_, err := d.cfg.Store.UpdateNode(ctx, id, func(n *types.Node) error {
			// Another manager that has the node now wrote a later
			// last-seen: leave it to that one.
			if n.GetLastSeen().AsTime().After(last.Add(time.Millisecond)) {
				return errSkip
			}
			n.State = types.NodeState_NODE_STATE_DOWN
			return nil
		})
		switch {
		case err == nil:
			d.log.Info("node is down: no heartbeat", "node", id, "silent_for", now.Sub(last).Round(time.Second).String())
		case errors.Is(err, errSkip):
		case isNotFound(err):
			d.hb.mu.Lock()
			delete(d.hb.seen, id)
			d.hb.mu.Unlock()
		default:
			d.log.Warn("cannot mark node down", "node", id, "err", err)
		}
	}
}

var errSkip = errors.New("skip")

// LiveNode is what this manager knows of nodeID now: whether it serves
// its session, its last heartbeat here, and the grants last sent to it;
// nil when this manager has neither heard from it nor sent it anything.
func (d *Dispatcher) LiveNode(nodeID string) *types.NodeLiveStatus {
	d.mu.Lock()
	_, connected := d.sessions[nodeID]
	d.mu.Unlock()
	d.hb.mu.Lock()
	b := d.hb.seen[nodeID]
	var last time.Time
	if b != nil {
		last = b.last
	}
	d.hb.mu.Unlock()
	held, known := d.grants.held(nodeID)
	if !connected && b == nil && !known {
		return nil
	}
	st := &types.NodeLiveStatus{Session: connected, GrantsHeld: uint32(held), GrantsKnown: known}
	if !last.IsZero() {
		st.LastHeartbeat = timestamppb.New(last)
	}
	return st
}
