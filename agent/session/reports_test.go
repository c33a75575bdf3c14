package session

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
)

// beatClient answers heartbeats with the next error of errs and hands
// every request to the test.
type beatClient struct {
	dapi.DispatcherClient
	reqs chan *dapi.HeartbeatRequest
	errs chan error
}

func (b *beatClient) Heartbeat(ctx context.Context, req *dapi.HeartbeatRequest, _ ...grpc.CallOption) (*dapi.HeartbeatResponse, error) {
	err := <-b.errs
	b.reqs <- req
	if err != nil {
		return nil, err
	}
	return &dapi.HeartbeatResponse{}, nil
}

func containers(req *dapi.HeartbeatRequest) string {
	out := ""
	for _, r := range req.Reports {
		out += r.ContainerId
	}
	return out
}

// Reports ride on heartbeats: kept while the manager is unreachable,
// dropped once recorded or refused as invalid, at most MaxMountReports a
// beat, the oldest first.
func TestReportsRideOnHeartbeats(t *testing.T) {
	// Each beat is let go by the test: the reports queued before it are
	// exactly those it carries.
	ticks := make(chan time.Time)
	s := &Session{log: slog.New(slog.NewTextHandler(io.Discard, nil)), after: func(time.Duration) <-chan time.Time { return ticks }}
	c := &beatClient{reqs: make(chan *dapi.HeartbeatRequest, 1), errs: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.heartbeat(ctx, c)
	beat := func(err error) string {
		t.Helper()
		ticks <- time.Time{}
		c.errs <- err
		select {
		case req := <-c.reqs:
			return containers(req)
		case <-time.After(10 * time.Second):
			t.Fatal("no heartbeat")
		}
		return ""
	}
	if got := beat(nil); got != "" {
		t.Fatalf("reports before any: %q", got)
	}
	s.Report(&dapi.MountReport{ContainerId: "a"})
	s.Report(&dapi.MountReport{ContainerId: "b", Event: dapi.MountReport_WIPED})
	// The manager is away: the reports stay.
	if got := beat(status.Error(codes.Unavailable, "down")); got != "ab" {
		t.Fatalf("first beat %q", got)
	}
	if got := beat(nil); got != "ab" {
		t.Fatalf("beat after a failure %q, want the reports again", got)
	}
	if got := beat(nil); got != "" {
		t.Fatalf("beat after the reports were recorded %q", got)
	}
	// Refused as invalid: dropped, not resent for ever.
	s.Report(&dapi.MountReport{ContainerId: "x"})
	if got := beat(status.Error(codes.InvalidArgument, "bad")); got != "x" {
		t.Fatalf("beat %q", got)
	}
	if got := beat(nil); got != "" {
		t.Fatalf("an invalid report was sent again: %q", got)
	}
	// A long backlog goes MaxMountReports at a time, oldest first.
	for i := 0; i < dapi.MaxMountReports+1; i++ {
		s.Report(&dapi.MountReport{ContainerId: "z"})
	}
	s.Report(&dapi.MountReport{ContainerId: "last"})
	if got := beat(nil); len(got) != dapi.MaxMountReports {
		t.Fatalf("first batch of the backlog: %d reports", len(got))
	}
	if got := beat(nil); got != "zlast" {
		t.Fatalf("rest of the backlog %q", got)
	}
}

func TestReportQueueIsBounded(t *testing.T) {
	s := &Session{}
	for i := 0; i < maxQueuedReports+3; i++ {
		s.Report(&dapi.MountReport{})
	}
	if _, dropped := s.reports.batch(); len(s.reports.pending) != maxQueuedReports || dropped != 3 {
		t.Fatalf("queued %d, dropped %d; want %d and 3", len(s.reports.pending), dropped, maxQueuedReports)
	}
}
