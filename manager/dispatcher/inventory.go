package dispatcher

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/identity"
	"github.com/lockbox-project/lockbox/manager/store"
)

// An agent's inventory (HeartbeatRequest.inventory) lists every container
// it holds secrets for. Reports can be lost (an agent queue that
// overflowed, a refused batch, an agent killed with reports queued); a
// lost WIPED would leave a `service ps` row saying a container holds
// secrets until the node is removed. After a beat's reports are applied,
// the node's rows of containers its inventory does not list are removed,
// counted and audited as reconciled.

// validateInventory checks an inventory before anything of its beat is
// recorded, so that a refused one removes nothing and records nothing
// (the agent sends the beat's reports again). Absent is valid: it says
// nothing.
func validateInventory(inv *dapi.ContainerInventory) error {
	if inv == nil {
		return nil
	}
	ids := inv.GetContainerIds()
	if len(ids) > dapi.MaxInventoryContainers {
		return status.Errorf(codes.InvalidArgument, "container inventory: at most %d containers, not %d", dapi.MaxInventoryContainers, len(ids))
	}
	for _, id := range ids {
		if err := store.ValidateNodeContainerID(id); err != nil {
			return status.Errorf(codes.InvalidArgument, "container inventory: %v", err)
		}
	}
	return nil
}

// reconcileInventory removes nodeID's container rows its inventory no
// longer lists, counts them and appends one audit entry per row. The node
// is the certificate's, so a node reconciles only its own rows. It says
// whether to ask the agent for its inventory again: removal failed (the
// beat's reports are recorded, so the beat itself does not fail: failing
// it would make the agent send them again and the audit log hold them
// twice).
//
// A stale inventory cannot remove a newer row: the agent sends a beat only
// after the last one answered or reached its deadline, and the deadline
// travels with the call, so this beat's context has ended before the
// agent's next beat can write a row; the store's removal, besides, holds
// only while none of the node's rows changed since it read them.
func (d *Dispatcher) reconcileInventory(ctx context.Context, nodeID string, inv *dapi.ContainerInventory) (again bool) {
	if inv == nil || d.cfg.Containers == nil {
		return false
	}
	removed, err := d.cfg.Containers.ReconcileNodeContainers(ctx, nodeID, inv.GetContainerIds())
	if err != nil {
		d.log.Warn("cannot reconcile the node's containers with its inventory; asked for it again", "node", nodeID, "removed", len(removed), "err", err)
		again = true
	}
	if len(removed) == 0 {
		return again
	}
	d.metrics.rowsReconciled.Add(float64(len(removed)))
	d.log.Info("removed container rows the node's inventory no longer lists (their wipe reports were lost)", "node", nodeID, "rows", len(removed))
	if d.cfg.Audit == nil {
		return again
	}
	names := d.serviceNames(removed)
	now := time.Now()
	entries := make([]*types.AuditEntry, 0, len(removed))
	for i, r := range removed {
		entries = append(entries, &types.AuditEntry{Id: identity.NewID(), Time: timestamppb.New(now.Add(time.Duration(i))),
			Actor: store.AuditActorNode(nodeID), Action: store.AuditWipeReconciled, ObjectKind: "service",
			ObjectId: r.ServiceID, ObjectName: names[r.ServiceID], NodeId: nodeID, Container: r.ContainerID})
	}
	for len(entries) > 0 {
		n := min(len(entries), store.MaxAuditAppend)
		if err := d.cfg.Audit.AppendNodeAudit(ctx, nodeID, entries[:n]...); err != nil {
			// The rows are gone already; the log misses these entries.
			d.log.Warn("cannot audit reconciled container rows", "node", nodeID, "entries", len(entries), "err", err)
			break
		}
		entries = entries[n:]
	}
	return again
}

// serviceNames is the names of the rows' services, by ID, as indexed (a
// removed service's rows go with it, so a row's service is nearly always
// there).
func (d *Dispatcher) serviceNames(rows []store.ReconciledContainer) map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := map[string]string{}
	if d.ix == nil {
		return m
	}
	for _, r := range rows {
		if s := d.ix.services[r.ServiceID]; s != nil {
			m[r.ServiceID] = s.svc.GetSpec().GetName()
		}
	}
	return m
}
