package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The container table: what each node's agent last reported about each
// container that holds a service's secrets (`lockbox service ps`). It is
// written only from a node's own heartbeat (the dispatcher names the node
// by its certificate and the service by what is placed on it) and stamped
// with the manager's clock. See doc.go for the keys.

// ContainerState is a container's row state: the one home of the words
// `service ps` shows.
type ContainerState string

const (
	// ContainerMounted: the container's secrets were mounted at its start.
	ContainerMounted ContainerState = "mounted"
	// ContainerUpdated: a live update changed the container's files.
	ContainerUpdated ContainerState = "updated"
	// ContainerUpdateFailed: a live update could not be applied; the
	// container keeps its previous files and the agent retries.
	ContainerUpdateFailed ContainerState = "update-failed"
)

// MaxContainersPerNode bounds the rows one node can hold in the table, so
// a misbehaving node cannot grow etcd without end. 2048 is above the
// 1,000 containers per node that issue 14's benchmark runs and far above
// kubelet's default of 110 pods. A report of a new container beyond it is
// refused (ReportOverCap) and counted by the dispatcher; rows already held
// keep being updated, and a wipe always frees one.
const MaxContainersPerNode = 2048

// MaxContainerError bounds the error text a row keeps.
const MaxContainerError = 512

// MaxContainersPage bounds one ListServiceContainers page (gRPC message
// size: a row is a few hundred bytes).
const MaxContainersPage = 1000

// maxContainerTxnOps keeps a write of the table under etcd's default limit
// of 128 operations per transaction.
const maxContainerTxnOps = 120

// ContainerSecret is a secret a container holds: its ID (the version; empty
// when the agent did not say) and name.
type ContainerSecret struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name"`
}

// ContainerStatus is one row of the table, stored as JSON.
type ContainerStatus struct {
	ServiceID   string            `json:"service_id"`
	NodeID      string            `json:"node_id"`
	ContainerID string            `json:"container_id"`
	State       ContainerState    `json:"state"`
	Secrets     []ContainerSecret `json:"secrets,omitempty"`
	// Error is why the last live update failed (update-failed only).
	Error string `json:"error,omitempty"`
	// Mounted is when the container's first report arrived, Updated when
	// its last one did: the manager's clock, never the node's.
	Mounted time.Time `json:"mounted"`
	Updated time.Time `json:"updated"`
}

// ContainerReport is one agent report as the table applies it.
type ContainerReport struct {
	ContainerID string
	// ServiceID is the service the report names, resolved among the
	// services placed on the node. Empty is allowed only with Wiped: a
	// wipe only ever removes the node's own row of that container.
	ServiceID string
	Wiped     bool
	State     ContainerState // when not Wiped
	// Secrets are what the container now holds. An update-failed report
	// without them keeps the row's secrets (the old files stay).
	Secrets []ContainerSecret
	Error   string
}

// ReportOutcome is what ApplyContainerReports did with one report.
type ReportOutcome int

const (
	// ReportApplied: the row was written (or, for a wipe, removed).
	ReportApplied ReportOutcome = iota
	// ReportNoRow: a wipe of a container the node has no row for.
	ReportNoRow
	// ReportOverCap: a new container beyond MaxContainersPerNode.
	ReportOverCap
)

// Key layout, see doc.go. A container ID is chosen by whoever starts the
// container: it is escaped so that no ID can reach another key.
func (s *Store) containerPrefix(serviceID string) string {
	return s.prefix + "containers/" + serviceID + "/"
}
func (s *Store) containerKey(serviceID, nodeID, containerID string) string {
	return s.containerPrefix(serviceID) + nodeID + "/" + url.PathEscape(containerID)
}
func (s *Store) nodeContainerPrefix(nodeID string) string {
	return s.prefix + "nodecontainers/" + nodeID + "/"
}
func (s *Store) nodeContainerKey(nodeID, containerID string) string {
	return s.nodeContainerPrefix(nodeID) + url.PathEscape(containerID)
}

// ValidateContainerUpdate checks what a live-update report adds to a mount
// report (ValidateNodeReport): the secret IDs and the error text.
func ValidateContainerUpdate(secretIDs []string, errText string) error {
	if len(secretIDs) > MaxNodeReportSecrets {
		return errorf(ErrInvalid, "a mount report may name at most %d secret IDs, not %d", MaxNodeReportSecrets, len(secretIDs))
	}
	for _, id := range secretIDs {
		if id != "" && !validRef(id) || len(id) > MaxNodeReportField || !utf8.ValidString(id) || !allRunes(id, unicode.IsPrint) {
			return errorf(ErrInvalid, "mount report secret ID %s is not valid", quoteShort(id))
		}
	}
	if len(errText) > MaxContainerError || !utf8.ValidString(errText) || !allRunes(errText, unicode.IsPrint) {
		return errorf(ErrInvalid, "mount report error is not valid: at most %d bytes of printable text", MaxContainerError)
	}
	return nil
}

// ApplyContainerReports applies a node's reports, in order, to its rows.
// Rows are keyed by the node given (the caller's authenticated identity):
// nothing a report says can reach another node's rows. The result says,
// per report, what was done. Writes are idempotent, so a heartbeat the
// agent sends again after a failure applies the same end state.
func (s *Store) ApplyContainerReports(ctx context.Context, nodeID string, reports []ContainerReport) ([]ReportOutcome, error) {
	if !validRef(nodeID) {
		return nil, errorf(ErrInvalid, "node ID %q is not valid", nodeID)
	}
	for _, r := range reports {
		if r.ContainerID == "" {
			return nil, errorf(ErrInvalid, "a container report names no container")
		}
		if r.ServiceID == "" && !r.Wiped || r.ServiceID != "" && !validRef(r.ServiceID) {
			return nil, errorf(ErrInvalid, "container report of %s names no valid service", quoteShort(r.ContainerID))
		}
	}
	// The node's index: which containers it has rows for, and under
	// which service.
	idx, err := s.cli.Get(ctx, s.nodeContainerPrefix(nodeID), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read container rows of node %s: %w", nodeID, err)
	}
	orig := map[string]string{} // container ID → service ID
	for _, kv := range idx.Kvs {
		cid, err := url.PathUnescape(strings.TrimPrefix(string(kv.Key), s.nodeContainerPrefix(nodeID)))
		if err != nil {
			continue
		}
		orig[cid] = string(kv.Value)
	}
	rows, err := s.readContainerRows(ctx, nodeID, orig, reports)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	count := len(orig)
	present := map[string]bool{} // whether the container has a row now
	for cid := range orig {
		present[cid] = true
	}
	cur := map[string]*ContainerStatus{} // what each touched container ends as (nil: no row)
	touched := map[string]bool{}
	out := make([]ReportOutcome, len(reports))
	for i, r := range reports {
		row, ok := cur[r.ContainerID]
		if !ok {
			row = rows[r.ContainerID] // nil when only the index entry exists
		}
		if r.Wiped {
			if !present[r.ContainerID] {
				out[i] = ReportNoRow
				continue
			}
			present[r.ContainerID], cur[r.ContainerID] = false, nil
			touched[r.ContainerID] = true
			count--
			continue
		}
		if !present[r.ContainerID] {
			if count >= MaxContainersPerNode {
				out[i] = ReportOverCap
				continue
			}
			count++
			present[r.ContainerID] = true
		}
		next := &ContainerStatus{ServiceID: r.ServiceID, NodeID: nodeID, ContainerID: r.ContainerID, State: r.State,
			Secrets: r.Secrets, Error: r.Error, Mounted: now, Updated: now}
		if row != nil && row.ServiceID == r.ServiceID {
			next.Mounted = row.Mounted
			if r.State == ContainerUpdateFailed && len(r.Secrets) == 0 {
				next.Secrets = row.Secrets
			}
		}
		if r.State != ContainerUpdateFailed {
			next.Error = ""
		}
		cur[r.ContainerID] = next
		touched[r.ContainerID] = true
	}
	var ops []clientv3.Op
	for cid := range touched {
		row, was := cur[cid], orig[cid]
		if was != "" && (row == nil || row.ServiceID != was) {
			ops = append(ops, clientv3.OpDelete(s.containerKey(was, nodeID, cid)))
		}
		if row == nil {
			if was != "" {
				ops = append(ops, clientv3.OpDelete(s.nodeContainerKey(nodeID, cid)))
			}
			continue
		}
		b, err := json.Marshal(row)
		if err != nil {
			return nil, fmt.Errorf("encode container row: %w", err)
		}
		ops = append(ops, clientv3.OpPut(s.containerKey(row.ServiceID, nodeID, cid), string(b)),
			clientv3.OpPut(s.nodeContainerKey(nodeID, cid), row.ServiceID))
	}
	if err := s.commitChunks(ctx, ops); err != nil {
		return nil, fmt.Errorf("write container rows of node %s: %w", nodeID, err)
	}
	return out, nil
}

// readContainerRows reads, in one transaction, the rows the reports touch
// that exist already (to keep their mount time and, on a failed update,
// their secrets).
func (s *Store) readContainerRows(ctx context.Context, nodeID string, orig map[string]string, reports []ContainerReport) (map[string]*ContainerStatus, error) {
	seen := map[string]bool{}
	var gets []clientv3.Op
	for _, r := range reports {
		svc := orig[r.ContainerID]
		if svc == "" || seen[r.ContainerID] || r.Wiped {
			continue
		}
		seen[r.ContainerID] = true
		gets = append(gets, clientv3.OpGet(s.containerKey(svc, nodeID, r.ContainerID)))
	}
	rows := map[string]*ContainerStatus{}
	if len(gets) == 0 {
		return rows, nil
	}
	resp, err := s.cli.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		return nil, fmt.Errorf("read container rows of node %s: %w", nodeID, err)
	}
	for _, rr := range resp.Responses {
		for _, kv := range rr.GetResponseRange().GetKvs() {
			row := &ContainerStatus{}
			if err := json.Unmarshal(kv.Value, row); err != nil {
				return nil, fmt.Errorf("decode container row at %s: %w", kv.Key, err)
			}
			rows[row.ContainerID] = row
		}
	}
	return rows, nil
}

// commitChunks writes ops in transactions small enough for etcd. They are
// not atomic together; every caller writes an end state that is the same
// when written again.
func (s *Store) commitChunks(ctx context.Context, ops []clientv3.Op) error {
	for len(ops) > 0 {
		n := min(len(ops), maxContainerTxnOps)
		if _, err := s.cli.Txn(ctx).Then(ops[:n]...).Commit(); err != nil {
			return err
		}
		ops = ops[n:]
	}
	return nil
}

// ListServiceContainers returns up to limit rows of service serviceID,
// ordered by node then container, starting after the page token after
// (empty: the first page); next is the following page's token, empty at
// the end.
func (s *Store) ListServiceContainers(ctx context.Context, serviceID, after string, limit int) (rows []*ContainerStatus, next string, err error) {
	if !validRef(serviceID) {
		return nil, "", errorf(ErrInvalid, "service ID %q is not valid", serviceID)
	}
	if limit <= 0 || limit > MaxContainersPage {
		limit = MaxContainersPage
	}
	p := s.containerPrefix(serviceID)
	start := p
	if after != "" {
		if strings.ContainsAny(after, "\x00") || strings.Count(after, "/") != 1 {
			return nil, "", errorf(ErrInvalid, "container page token %q is not valid", after)
		}
		start = p + after + "\x00"
	}
	resp, err := s.cli.Get(ctx, start, clientv3.WithRange(clientv3.GetPrefixRangeEnd(p)), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return nil, "", fmt.Errorf("list containers of service %s: %w", serviceID, err)
	}
	for _, kv := range resp.Kvs {
		row := &ContainerStatus{}
		if err := json.Unmarshal(kv.Value, row); err != nil {
			return nil, "", fmt.Errorf("decode container row at %s: %w", kv.Key, err)
		}
		rows = append(rows, row)
	}
	if resp.More && len(resp.Kvs) > 0 {
		next = strings.TrimPrefix(string(resp.Kvs[len(resp.Kvs)-1].Key), p)
	}
	return rows, next, nil
}

// RemoveNodeContainers removes every row of nodeID and returns how many
// went: a removed node's containers are no longer reported on.
func (s *Store) RemoveNodeContainers(ctx context.Context, nodeID string) (int, error) {
	if !validRef(nodeID) {
		return 0, errorf(ErrInvalid, "node ID %q is not valid", nodeID)
	}
	p := s.nodeContainerPrefix(nodeID)
	idx, err := s.cli.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read container rows of node %s: %w", nodeID, err)
	}
	var ops []clientv3.Op
	for _, kv := range idx.Kvs {
		cid, err := url.PathUnescape(strings.TrimPrefix(string(kv.Key), p))
		if err == nil && validRef(string(kv.Value)) {
			ops = append(ops, clientv3.OpDelete(s.containerKey(string(kv.Value), nodeID, cid)))
		}
		ops = append(ops, clientv3.OpDelete(string(kv.Key)))
	}
	if err := s.commitChunks(ctx, ops); err != nil {
		return 0, fmt.Errorf("remove container rows of node %s: %w", nodeID, err)
	}
	return len(idx.Kvs), nil
}

// ReconciledContainer is a row ReconcileNodeContainers removed.
type ReconciledContainer struct {
	ContainerID string
	ServiceID   string
}

// maxReconcileTries bounds how often ReconcileNodeContainers reads the
// node's rows again after another write to them won the race.
const maxReconcileTries = 3

// ReconcileNodeContainers removes nodeID's rows of the containers not in
// holds, the node's inventory of the containers it holds secrets for, and
// returns them: a row whose wipe report was lost (an agent's queue that
// overflowed, a refused batch, an agent killed with reports queued) would
// otherwise say forever that the container holds secrets. It only
// removes: a container in holds without a row stays without one (its
// mount report makes it). Rows are keyed by the node given (the caller's
// authenticated identity), so no inventory can reach another node's.
//
// The node's rows are read at one revision and removed in transactions
// that each hold only if nothing under the node's index range changed
// since (a compare on the whole range): a row another heartbeat of the
// node wrote meanwhile is never removed on an older view. Such a race is
// read again, up to maxReconcileTries times. Removal is in chunks of
// maxContainerTxnOps operations; a failure part way returns the rows
// removed so far with the error (the rest go at the next inventory).
func (s *Store) ReconcileNodeContainers(ctx context.Context, nodeID string, holds []string) ([]ReconciledContainer, error) {
	if !validRef(nodeID) {
		return nil, errorf(ErrInvalid, "node ID %q is not valid", nodeID)
	}
	if len(holds) > MaxContainersPerNode {
		return nil, errorf(ErrInvalid, "a node inventory may list at most %d containers, not %d", MaxContainersPerNode, len(holds))
	}
	keep := make(map[string]bool, len(holds))
	for _, id := range holds {
		if err := ValidateNodeContainerID(id); err != nil {
			return nil, err
		}
		keep[id] = true
	}
	var removed []ReconciledContainer
	for try := 1; ; try++ {
		done, raced, err := s.reconcileOnce(ctx, nodeID, keep)
		removed = append(removed, done...)
		if err != nil || !raced {
			return removed, err
		}
		if try == maxReconcileTries {
			return removed, errorf(ErrVersionConflict, "container rows of node %s kept changing while reconciled; try again", nodeID)
		}
	}
}

// reconcileOnce is one read and removal of ReconcileNodeContainers; raced
// says a chunk was not removed because the node's rows changed.
func (s *Store) reconcileOnce(ctx context.Context, nodeID string, keep map[string]bool) (removed []ReconciledContainer, raced bool, err error) {
	p := s.nodeContainerPrefix(nodeID)
	idx, err := s.cli.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, false, fmt.Errorf("read container rows of node %s: %w", nodeID, err)
	}
	var gone []ReconciledContainer
	for _, kv := range idx.Kvs {
		cid, err := url.PathUnescape(strings.TrimPrefix(string(kv.Key), p))
		if err != nil || keep[cid] {
			continue
		}
		gone = append(gone, ReconciledContainer{ContainerID: cid, ServiceID: string(kv.Value)})
	}
	return s.removeRowsAt(ctx, nodeID, idx.Header.Revision, gone)
}

// removeRowsAt removes nodeID's rows gone, read at revision rev, as long as
// nothing under the node's index changed since rev: the compare covers
// the range, a key created since included. Whole rows go per transaction
// (each row is one or two deletes), so that what is returned as removed
// was removed.
func (s *Store) removeRowsAt(ctx context.Context, nodeID string, rev int64, gone []ReconciledContainer) (removed []ReconciledContainer, raced bool, err error) {
	unchanged := clientv3.Compare(clientv3.ModRevision(s.nodeContainerPrefix(nodeID)), "<", rev+1).WithPrefix()
	for len(gone) > 0 {
		var ops []clientv3.Op
		rows := 0
		for ; rows < len(gone) && len(ops)+2 <= maxContainerTxnOps; rows++ {
			r := gone[rows]
			if validRef(r.ServiceID) {
				ops = append(ops, clientv3.OpDelete(s.containerKey(r.ServiceID, nodeID, r.ContainerID)))
			}
			ops = append(ops, clientv3.OpDelete(s.nodeContainerKey(nodeID, r.ContainerID)))
		}
		resp, err := s.cli.Txn(ctx).If(unchanged).Then(ops...).Commit()
		if err != nil {
			return removed, false, fmt.Errorf("remove container rows of node %s: %w", nodeID, err)
		}
		if !resp.Succeeded {
			return removed, true, nil
		}
		removed = append(removed, gone[:rows]...)
		gone = gone[rows:]
	}
	return removed, false, nil
}
