package session

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
)

// fakeHolder is the agent's list of containers; during, if set, runs
// inside Containers (what happens while the inventory is taken).
type fakeHolder struct {
	mu     sync.Mutex
	ids    []string
	during func()
}

func (f *fakeHolder) Containers() []string {
	f.mu.Lock()
	ids, during := slices.Clone(f.ids), f.during
	f.during = nil
	f.mu.Unlock()
	if during != nil {
		during()
	}
	return ids
}

func (f *fakeHolder) set(ids ...string) {
	f.mu.Lock()
	f.ids = ids
	f.mu.Unlock()
}

// answer is what the fake manager answers one beat.
type answer struct {
	err  error
	resp *dapi.HeartbeatResponse
}

// invClient answers heartbeats with the next answer and hands every
// request to the test.
type invClient struct {
	dapi.DispatcherClient
	reqs    chan *dapi.HeartbeatRequest
	answers chan answer
}

func (c *invClient) Heartbeat(ctx context.Context, req *dapi.HeartbeatRequest, _ ...grpc.CallOption) (*dapi.HeartbeatResponse, error) {
	a := <-c.answers
	c.reqs <- req
	if a.err != nil {
		return nil, a.err
	}
	if a.resp == nil {
		a.resp = &dapi.HeartbeatResponse{}
	}
	return a.resp, nil
}

// beats drives the heartbeats of one session after another.
type beats struct {
	t     *testing.T
	s     *Session
	c     *invClient
	ticks chan time.Time
	// waits are the pauses the heartbeat loop asked for, in order.
	waits chan time.Duration
	stop  func()
}

func newBeats(t *testing.T, holder Inventory) *beats {
	ticks := make(chan time.Time)
	waits := make(chan time.Duration, 1024)
	s := &Session{log: slog.New(slog.NewTextHandler(io.Discard, nil)), after: func(d time.Duration) <-chan time.Time {
		select {
		case waits <- d:
		default:
		}
		return ticks
	}}
	if holder != nil {
		s.SetInventory(holder)
	}
	b := &beats{t: t, s: s, c: &invClient{reqs: make(chan *dapi.HeartbeatRequest, 1), answers: make(chan answer, 1)}, ticks: ticks, waits: waits}
	b.session()
	t.Cleanup(func() { b.stop() })
	return b
}

// session starts the heartbeats of a new session, ending the last one.
func (b *beats) session() {
	if b.stop != nil {
		b.stop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.s.heartbeat(ctx, b.c)
	}()
	b.stop = func() { cancel(); <-done }
}

// beat lets one beat go, answered with a, and returns its request.
func (b *beats) beat(a answer) *dapi.HeartbeatRequest {
	b.t.Helper()
	b.ticks <- time.Time{}
	b.c.answers <- a
	select {
	case req := <-b.c.reqs:
		return req
	case <-time.After(10 * time.Second):
		b.t.Fatal("no heartbeat")
	}
	return nil
}

// inv is a request's inventory as "-" (absent) or the IDs joined by ",".
func inv(req *dapi.HeartbeatRequest) string {
	if req.Inventory == nil {
		return "-"
	}
	return "[" + strings.Join(req.Inventory.GetContainerIds(), ",") + "]"
}

var accept = answer{}

// The inventory rides on the first beat of each session, after reports
// were dropped or refused, after a beat that carried it failed, and when
// the manager asks; not on other beats. It lists what the agent holds.
func TestInventorySchedule(t *testing.T) {
	holder := &fakeHolder{ids: []string{"c1", "c2"}}
	b := newBeats(t, holder)
	steps := []struct {
		name   string
		before func()
		answer answer
		want   string
	}{
		{"first beat of the session", nil, accept, "[c1,c2]"},
		{"next beat", nil, accept, "-"},
		{"a report, recorded", func() { b.s.Report(&dapi.MountReport{ContainerId: "c3"}); holder.set("c1", "c2", "c3") }, accept, "-"},
		{"a report refused as invalid (dropped)", func() { b.s.Report(&dapi.MountReport{ContainerId: "bad"}) }, answer{err: status.Error(codes.InvalidArgument, "bad")}, "-"},
		{"after the refusal", nil, accept, "[c1,c2,c3]"},
		{"then none", nil, accept, "-"},
		{"a beat that fails, without an inventory", nil, answer{err: status.Error(codes.Unavailable, "down")}, "-"},
		{"a failure alone does not call for one", nil, accept, "-"},
		{"the manager asks for it", nil, answer{resp: &dapi.HeartbeatResponse{SendInventory: true}}, "-"},
		{"after the ask", func() { holder.set("c1") }, answer{err: status.Error(codes.Unavailable, "down")}, "[c1]"},
		{"sent again after its beat failed", nil, accept, "[c1]"},
		{"and not after it went through", nil, accept, "-"},
		{"holds nothing: present and empty", func() { holder.set(); b.session() }, accept, "[]"},
		{"after that", nil, accept, "-"},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		if got := inv(b.beat(st.answer)); got != st.want {
			t.Fatalf("%s: inventory %s, want %s", st.name, got, st.want)
		}
	}
	// The queue overflowed while no manager took reports: the beat that
	// learns it carries the inventory.
	holder.set("c9")
	for range maxQueuedReports + 1 {
		b.s.Report(&dapi.MountReport{ContainerId: "x"})
	}
	if got := inv(b.beat(accept)); got != "[c9]" {
		t.Fatalf("beat after a queue overflow: inventory %s, want [c9]", got)
	}
	if got := inv(b.beat(accept)); got != "-" {
		t.Fatalf("beat after that: inventory %s", got)
	}
}

// The inventory is taken after the beat's reports: a container mounted
// while the beat is being made (its MOUNTED queued after the batch was
// taken, the agent listing it only then) is in neither, so the manager
// does not remove the row its report is about to make.
func TestInventoryTakenAfterReports(t *testing.T) {
	holder := &fakeHolder{ids: []string{"c1"}}
	b := newBeats(t, holder)
	b.s.Report(&dapi.MountReport{ContainerId: "c1"})
	holder.during = func() {
		holder.set("c1", "late")
		b.s.Report(&dapi.MountReport{ContainerId: "late"})
	}
	req := b.beat(accept)
	if got, reps := inv(req), containers(req); got != "[c1]" || reps != "c1" {
		t.Fatalf("first beat: inventory %s, reports %q; want [c1] and c1 (late in neither)", got, reps)
	}
	if req := b.beat(accept); containers(req) != "late" || inv(req) != "-" {
		t.Fatalf("second beat: reports %q, inventory %s; want late's report alone", containers(req), inv(req))
	}
}

// An agent holding more containers than an inventory may list sends none
// (the manager would refuse it), and its reports still go.
func TestInventoryOverTheBoundIsNotSent(t *testing.T) {
	ids := make([]string, dapi.MaxInventoryContainers+1)
	for i := range ids {
		ids[i] = "c"
	}
	b := newBeats(t, &fakeHolder{ids: ids})
	b.s.Report(&dapi.MountReport{ContainerId: "a"})
	if req := b.beat(accept); req.Inventory != nil || containers(req) != "a" {
		t.Fatalf("inventory of %d containers sent (%d), reports %q", len(ids), len(req.Inventory.GetContainerIds()), containers(req))
	}
	if req := b.beat(accept); req.Inventory != nil {
		t.Fatal("inventory sent on the next beat")
	}
}

// A manager that refuses a beat with an inventory as invalid recorded
// nothing of it: its reports go again without the inventory, which tells
// whether the inventory or a report was refused. A refused inventory is
// not sent again in the session (the next session tries again); a report
// refused on its own is dropped, and the inventory goes with the next beat
// as after any drop.
func TestInventoryRefused(t *testing.T) {
	invalid := answer{err: status.Error(codes.InvalidArgument, "invalid")}
	t.Run("the inventory", func(t *testing.T) {
		b := newBeats(t, &fakeHolder{ids: []string{"c1"}})
		b.s.Report(&dapi.MountReport{ContainerId: "a"})
		if req := b.beat(invalid); inv(req) != "[c1]" || containers(req) != "a" {
			t.Fatalf("first beat: inventory %s, reports %q", inv(req), containers(req))
		}
		b.s.Report(&dapi.MountReport{ContainerId: "b", Event: dapi.MountReport_WIPED})
		if req := b.beat(accept); inv(req) != "-" || containers(req) != "ab" {
			t.Fatalf("after the refusal: inventory %s, reports %q; want none and ab", inv(req), containers(req))
		}
		b.s.Report(&dapi.MountReport{ContainerId: "c"})
		if req := b.beat(invalid); inv(req) != "-" {
			t.Fatalf("inventory %s sent again in the session that had it refused", inv(req))
		}
		if req := b.beat(accept); inv(req) != "-" || containers(req) != "" {
			t.Fatalf("after a refused report: inventory %s, reports %q; want neither", inv(req), containers(req))
		}
		b.session()
		if req := b.beat(accept); inv(req) != "[c1]" {
			t.Fatalf("next session's first beat: inventory %s, want [c1]", inv(req))
		}
	})
	t.Run("a report", func(t *testing.T) {
		b := newBeats(t, &fakeHolder{ids: []string{"c1"}})
		b.s.Report(&dapi.MountReport{ContainerId: "bad"})
		if req := b.beat(invalid); inv(req) != "[c1]" || containers(req) != "bad" {
			t.Fatalf("first beat: inventory %s, reports %q", inv(req), containers(req))
		}
		if req := b.beat(invalid); inv(req) != "-" || containers(req) != "bad" {
			t.Fatalf("second beat: inventory %s, reports %q; want the reports alone", inv(req), containers(req))
		}
		if req := b.beat(accept); inv(req) != "[c1]" || containers(req) != "" {
			t.Fatalf("after the report was dropped: inventory %s, reports %q; want the inventory alone", inv(req), containers(req))
		}
		if req := b.beat(accept); inv(req) != "-" {
			t.Fatalf("inventory %s sent again", inv(req))
		}
	})
}

// Without a list of containers (no agent given), beats carry none: the
// managers then change nothing.
func TestNoInventorySource(t *testing.T) {
	b := newBeats(t, nil)
	if req := b.beat(accept); req.Inventory != nil {
		t.Fatalf("inventory %v sent without a source", req.Inventory)
	}
}
