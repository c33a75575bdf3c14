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

// ContainerTable keeps what each node last reported about each container
// (manager/store.Store implements it): the rows `lockbox service ps` shows.
type ContainerTable interface {
	ApplyContainerReports(ctx context.Context, nodeID string, reports []store.ContainerReport) ([]store.ReportOutcome, error)
	// ReconcileNodeContainers removes the node's rows of containers not
	// in holds, its inventory (inventory.go).
	ReconcileNodeContainers(ctx context.Context, nodeID string, holds []string) ([]store.ReconciledContainer, error)
}

// Reasons a mount report is dropped, the values of the reason label.
const (
	// dropNotPlaced: the report names a service that is not placed on the
	// node (a wipe is kept when the node holds a row for that container).
	dropNotPlaced = "not_placed"
	// dropOverCap: the node holds store.MaxContainersPerNode rows; the
	// report is still audited, but no row is kept for the new container.
	dropOverCap = "over_cap"
)

var dropReasons = []string{dropNotPlaced, dropOverCap}

// reportActions maps a report's event to its audit action and row state.
var reportActions = map[dapi.MountReport_Event]struct {
	action string
	state  store.ContainerState
}{
	dapi.MountReport_MOUNTED:       {store.AuditMount, store.ContainerMounted},
	dapi.MountReport_WIPED:         {store.AuditWipe, ""},
	dapi.MountReport_UPDATED:       {store.AuditLiveUpdate, store.ContainerUpdated},
	dapi.MountReport_UPDATE_FAILED: {store.AuditLiveUpdateFailed, store.ContainerUpdateFailed},
}

// recordReports applies what a node reports about its containers to the
// container table and the audit log. The node is named by its certificate
// and the time is the manager's: a node cannot write under another's name
// or place entries in the past. A node can only speak of the services
// placed on it: a report naming any other is dropped and counted (a
// forged report stores nothing). The table is written first, then the
// audit entries in one transaction; if either fails the heartbeat fails
// and the agent sends the reports again (the table's writes are
// idempotent).
func (d *Dispatcher) recordReports(ctx context.Context, nodeID string, reports []*dapi.MountReport) error {
	if len(reports) == 0 {
		return nil
	}
	if d.cfg.Audit == nil && d.cfg.Containers == nil {
		// Nothing to record into: accepting lets the agent drop them.
		return nil
	}
	if len(reports) > dapi.MaxMountReports {
		return status.Errorf(codes.InvalidArgument, "at most %d mount reports per heartbeat, not %d", dapi.MaxMountReports, len(reports))
	}
	for _, r := range reports {
		if err := validateReport(r); err != nil {
			return err
		}
	}
	if !d.reportBudget.take(nodeID, len(reports), time.Now(), d.cfg.HeartbeatPeriod) {
		// The agent keeps them and sends them with a later beat.
		return status.Errorf(codes.ResourceExhausted, "at most %d mount reports per heartbeat period; send the rest later", dapi.MaxMountReports)
	}

	placed := d.placedByName(nodeID)
	keep := make([]bool, len(reports))
	var rows []store.ContainerReport
	rowOf := make([]int, len(reports)) // index into rows, -1: none
	notPlaced := 0
	for i, r := range reports {
		rowOf[i] = -1
		svcID := placed[r.GetServiceName()]
		wipe := r.GetEvent() == dapi.MountReport_WIPED
		if svcID == "" && !wipe {
			notPlaced++
			continue
		}
		keep[i] = svcID != ""
		rowOf[i] = len(rows)
		rows = append(rows, store.ContainerReport{ContainerID: r.GetContainerId(), ServiceID: svcID, Wiped: wipe,
			State: reportActions[r.GetEvent()].state, Secrets: reportSecrets(r), Error: r.GetError()})
	}
	var outcomes []store.ReportOutcome
	if d.cfg.Containers != nil && len(rows) > 0 {
		var err error
		if outcomes, err = d.cfg.Containers.ApplyContainerReports(ctx, nodeID, rows); err != nil {
			return status.Errorf(codes.Unavailable, "record container reports: %v", err)
		}
	}
	overCap := 0
	for i := range reports {
		if rowOf[i] < 0 {
			continue // counted above
		}
		if outcomes != nil {
			switch outcomes[rowOf[i]] {
			case store.ReportApplied:
				// A wipe of a service no longer placed here is the end
				// of a container the node did hold: recorded.
				keep[i] = true
			case store.ReportOverCap:
				overCap++
			}
		}
		if !keep[i] {
			notPlaced++
		}
	}
	d.metrics.reportsDropped.WithLabelValues(dropNotPlaced).Add(float64(notPlaced))
	d.metrics.reportsDropped.WithLabelValues(dropOverCap).Add(float64(overCap))
	if notPlaced > 0 {
		d.log.Warn("node reported on containers of services not placed on it; dropped", "node", nodeID, "reports", notPlaced)
	}
	if overCap > 0 {
		d.log.Warn("node holds the most container rows it may; new containers are audited but not listed by service ps",
			"node", nodeID, "limit", store.MaxContainersPerNode, "refused", overCap)
	}
	if d.cfg.Audit == nil {
		return nil
	}
	// The log orders entries by time, then by (random) ID: each entry of
	// the batch is a nanosecond after the one before, so the log keeps the
	// order the node reported in (a mount before the update that follows
	// it).
	now := time.Now()
	var entries []*types.AuditEntry
	for i, r := range reports {
		if !keep[i] {
			continue
		}
		at := timestamppb.New(now.Add(time.Duration(len(entries))))
		svcID := ""
		if rowOf[i] >= 0 {
			svcID = rows[rowOf[i]].ServiceID
		}
		entries = append(entries, &types.AuditEntry{Id: identity.NewID(), Time: at, Actor: store.AuditActorNode(nodeID), Action: reportActions[r.GetEvent()].action,
			ObjectKind: "service", ObjectId: svcID, ObjectName: r.GetServiceName(), NodeId: nodeID, Container: r.GetContainerId(), Secrets: auditSecrets(r)})
	}
	if len(entries) == 0 {
		return nil
	}
	if err := d.cfg.Audit.AppendNodeAudit(ctx, nodeID, entries...); err != nil {
		return status.Errorf(codes.Unavailable, "record mount reports: %v", err)
	}
	return nil
}

// validateReport checks one report's fields before anything is recorded.
func validateReport(r *dapi.MountReport) error {
	if _, ok := reportActions[r.GetEvent()]; !ok {
		return status.Errorf(codes.InvalidArgument, "mount report of %q: unknown event %d", r.GetContainerId(), r.GetEvent())
	}
	if err := store.ValidateNodeReport(r.GetContainerId(), r.GetServiceName(), r.GetSecretNames()); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if err := store.ValidateContainerUpdate(r.GetSecretIds(), r.GetError()); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if ids := r.GetSecretIds(); len(ids) > 0 && len(ids) != len(r.GetSecretNames()) {
		return status.Errorf(codes.InvalidArgument, "mount report of %q: %d secret IDs for %d secret names", r.GetContainerId(), len(ids), len(r.GetSecretNames()))
	}
	return nil
}

// placedByName is the services placed on nodeID now, by name (the name is
// what a report carries): the view its session was sent, or, without a
// session on this manager, the one the index gives to a current agent.
func (d *Dispatcher) placedByName(nodeID string) map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var v view
	if s := d.sessions[nodeID]; s != nil {
		v = s.view
	} else if d.ix != nil {
		if n := d.ix.nodes[nodeID]; n != nil {
			// Without a session here, what the agent announced is not
			// known: a report about a claim-ruled service is accepted
			// (it only records what the agent says it did).
			v = viewOf(d.ix.services, n, allCaps)
		}
	}
	m := make(map[string]string, len(v))
	for id, svc := range v {
		m[svc.GetSpec().GetName()] = id
	}
	return m
}

func reportSecrets(r *dapi.MountReport) []store.ContainerSecret {
	var out []store.ContainerSecret
	ids := r.GetSecretIds()
	for i, name := range r.GetSecretNames() {
		s := store.ContainerSecret{Name: name}
		if i < len(ids) {
			s.ID = ids[i]
		}
		out = append(out, s)
	}
	return out
}

// auditSecrets is the secrets of a report as the audit log names them:
// "name@id" when the agent said which version, the name otherwise.
func auditSecrets(r *dapi.MountReport) []string {
	var out []string
	for _, s := range reportSecrets(r) {
		if s.ID != "" {
			out = append(out, s.Name+"@"+s.ID)
		} else {
			out = append(out, s.Name)
		}
	}
	return out
}
