package session

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
)

// A queue of more than one beat's reports is sent ReportBeatsPerPeriod
// times a period, not once: with one beat a period, a node that starts
// more than six claiming containers a second fell behind for good, its
// queue filled and the oldest reports (audit entries, service ps rows)
// were dropped. A beat the manager defers (ResourceExhausted: the
// period's budget is spent) keeps its reports and waits a whole period.
func TestReportBacklogBeatsSooner(t *testing.T) {
	b := newBeats(t, nil)
	const period = 5 * time.Second // the default, before any answer
	quick := period / dapi.ReportBeatsPerPeriod
	next := func() time.Duration {
		t.Helper()
		select {
		case d := <-b.waits:
			return d
		case <-time.After(10 * time.Second):
			t.Fatal("the heartbeat loop did not wait again")
			return 0
		}
	}
	if d := next(); d != period {
		t.Fatalf("first wait %v, want %v", d, period)
	}
	n := 2*dapi.MaxMountReports + 1
	for i := range n {
		b.s.Report(&dapi.MountReport{ContainerId: fmt.Sprint("c", i)})
	}
	steps := []struct {
		name  string
		a     answer
		sent  int
		wait  time.Duration
		queue int
	}{
		{"a full beat, more queued", accept, dapi.MaxMountReports, quick, dapi.MaxMountReports + 1},
		{"deferred to the next period", answer{err: status.Error(codes.ResourceExhausted, "budget")}, dapi.MaxMountReports, period, dapi.MaxMountReports + 1},
		{"the same beat again", accept, dapi.MaxMountReports, quick, 1},
		{"the last report", accept, 1, period, 0},
	}
	for _, st := range steps {
		req := b.beat(st.a)
		if len(req.GetReports()) != st.sent {
			t.Fatalf("%s: sent %d reports, want %d", st.name, len(req.GetReports()), st.sent)
		}
		if d := next(); d != st.wait {
			t.Errorf("%s: then waited %v, want %v", st.name, d, st.wait)
		}
		if q := b.s.reports.len(); q != st.queue {
			t.Errorf("%s: %d reports queued, want %d", st.name, q, st.queue)
		}
	}
}
