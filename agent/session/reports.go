package session

import (
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
)

// maxQueuedReports bounds the mount reports waiting for a manager: a node
// cut off from every manager keeps the newest and counts what it dropped.
const maxQueuedReports = 4096

// reportQueue holds mount reports until a heartbeat delivers them.
type reportQueue struct {
	mu      sync.Mutex
	pending []*dapi.MountReport
	dropped uint64
}

// Report queues what happened to a container's secrets (mounted, wiped)
// for the managers' audit log; the next heartbeat carries it. Names only:
// never pass secret data.
func (s *Session) Report(r *dapi.MountReport) {
	q := &s.reports
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) >= maxQueuedReports {
		q.pending = q.pending[1:]
		q.dropped++
	}
	q.pending = append(q.pending, r)
}

// batch is the next reports to send (the oldest first), and how many
// were dropped since the last call because the queue was full.
func (q *reportQueue) batch() ([]*dapi.MountReport, uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(len(q.pending), dapi.MaxMountReports)
	dropped := q.dropped
	q.dropped = 0
	return append([]*dapi.MountReport(nil), q.pending[:n]...), dropped
}

// done removes sent from the queue after a heartbeat answered err: all of
// them when it succeeded (recorded) or was refused as invalid (sending
// them again cannot help); none otherwise. It returns whether they went.
func (q *reportQueue) done(sent []*dapi.MountReport, err error) bool {
	if len(sent) == 0 || (err != nil && status.Code(err) != codes.InvalidArgument) {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	// Only if the queue still starts with them (no overlapping drop).
	if len(q.pending) < len(sent) || q.pending[0] != sent[0] {
		return false
	}
	q.pending = q.pending[len(sent):]
	return true
}

// len is how many reports wait.
func (q *reportQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}
