package dispatcher

import (
	"context"
	"reflect"
	"testing"
	"time"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
)

// viewID is the identity of the view the session of node name holds now.
func (h *harness) viewID(name string) uintptr {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	return reflect.ValueOf(h.d.sessions[h.nodes[name]].view).Pointer()
}

// Nodes with the same placement share one move per fan-out (and from then
// on one view), and sharing never hands a node another node's grants:
// nodes that held the same view but match a changed service differently
// get different moves.
func TestSharedMovesKeepPlacementExact(t *testing.T) {
	h := newHarness(t)
	nodes := map[string]map[string]string{
		"e1": {"zone": "east", "tier": "a"}, "e2": {"zone": "east", "tier": "b"}, "e3": {"zone": "east", "tier": "a"},
		"w1": {"zone": "west", "tier": "a"}, "w2": {"zone": "west", "tier": "b"},
	}
	for name, labels := range nodes {
		h.node(name, labels)
	}
	s1, s2, s3 := h.secret("s1", "one"), h.secret("s2", "two"), h.secret("s3", "three")
	all := h.service("all", nil, s1)
	east := h.service("east", []string{"node.labels.zone==east"}, s2)
	conns := map[string]*conn{}
	for name := range nodes {
		conns[name] = h.connect(h.nodes[name], 0)
		conns[name].next() // COMPLETE
	}
	expectAll := func(names []string, want ...string) {
		t.Helper()
		for _, name := range names {
			expect(t, conns[name].next(), dapi.SessionMessage_INCREMENTAL, want...)
		}
	}
	eastNodes, westNodes := []string{"e1", "e2", "e3"}, []string{"w1", "w2"}

	// Nodes with the same placement attached with one view.
	if h.viewID("e1") != h.viewID("e2") || h.viewID("w1") != h.viewID("w2") || h.viewID("e1") == h.viewID("w1") {
		t.Fatal("sessions did not attach with one view per placement")
	}

	// An update every node sees: they keep sharing.
	sp := spec("all", nil, s1)
	sp.Labels = map[string]string{"round": "1"}
	if _, err := h.st.UpdateService(h.ctx, all.Id, all.Meta.Version, sp); err != nil {
		t.Fatal(err)
	}
	expectAll(append(eastNodes, westNodes...), "+service:all[s1]")
	if h.viewID("e1") != h.viewID("e2") || h.viewID("e1") != h.viewID("e3") || h.viewID("w1") != h.viewID("w2") {
		t.Fatal("nodes with the same placement do not share their view")
	}
	if h.viewID("e1") == h.viewID("w1") {
		t.Fatal("nodes with different placements share a view")
	}

	// Same old view, different match: only tier a gets the new service.
	h.service("tiera", []string{"node.labels.tier==a"}, s3)
	expectAll([]string{"e1", "e3", "w1"}, "+secret:s3=three", "+service:tiera[s3]")
	for _, name := range []string{"e2", "w2"} {
		conns[name].quiet()
	}
	if h.viewID("e1") == h.viewID("e2") || h.viewID("e1") != h.viewID("e3") {
		t.Fatal("views after a change that split the east nodes are not split")
	}

	// A placement moves east's grants west: shared views on both sides,
	// opposite moves.
	if _, err := h.st.UpdateService(h.ctx, east.Id, east.Meta.Version, spec("east", []string{"node.labels.zone==west"}, s2)); err != nil {
		t.Fatal(err)
	}
	expectAll(eastNodes, "-secret:s2", "-service:east")
	expectAll(westNodes, "+secret:s2=two", "+service:east[s2]")
	for name := range nodes {
		conns[name].quiet()
	}
}

// nullStream is gRPC short of the network: it takes the parts and frees
// them, as gRPC's writer does once they are written.
type nullStream struct{ ctx context.Context }

func (s *nullStream) Context() context.Context { return s.ctx }
func (s *nullStream) SendMsg(v any) error {
	data, err := Codec{}.Marshal(v)
	if err != nil {
		return err
	}
	data.Free()
	return nil
}

// A send allocates only the list of parts it hands gRPC: the headers are
// encoded once per fan-out and per session, the message is the session's.
// (Before: the header bytes, their boxing as a buffer, the message, its
// change list and the part list: five, plus a regrowth of the header when
// its size estimate fell short.)
func TestSendAllocatesOnlyThePartList(t *testing.T) {
	managers := []string{"10.0.0.1:4242", "10.0.0.2:4242"} // as the manager keeps its list
	d := New(Config{Managers: func() []string { return managers }})
	s := newSession("node-1", allCaps)
	enc, err := encodeChange(&dapi.AssignmentChange{Action: dapi.AssignmentChange_REMOVE}, false)
	if err != nil {
		t.Fatal(err)
	}
	items := []item{{change: enc}, {change: enc}}
	var stream Sender = &nullStream{ctx: context.Background()}
	allocs := testing.AllocsPerRun(200, func() {
		if err := d.send(stream, s, dapi.SessionMessage_INCREMENTAL, 1<<40, items); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Fatalf("a send allocates %.1f times, want at most 1", allocs)
	}
}

// A fan-out for a node event that moves nothing (the node's own creation
// reached after its session attached, a label no constraint reads) leaves
// the session on the view it shares with the other nodes of its placement:
// it used to give the node a copy of its own, which made the test above
// fail now and then under load (the creation's fan-out lagging the attach).
func TestNodeEventKeepsSharedView(t *testing.T) {
	h := newHarness(t)
	h.node("a", map[string]string{"zone": "east"})
	h.node("b", map[string]string{"zone": "east"})
	s1 := h.secret("s1", "one")
	h.service("all", nil, s1)
	ca, cb := h.connect(h.nodes["a"], 0), h.connect(h.nodes["b"], 0)
	ca.next()
	cb.next() // COMPLETE each
	if h.viewID("a") != h.viewID("b") {
		t.Fatal("sessions did not attach with one view")
	}
	// The fan-out a node event makes, run here so that it comes after the
	// attach whatever the machine's load.
	h.d.fanOut(h.ctx, &delta{services: map[string]bool{}, nodes: map[string]bool{h.nodes["a"]: true}}, time.Time{})
	if h.viewID("a") != h.viewID("b") {
		t.Fatal("a node event that moved nothing took the node off its shared view")
	}
	ca.quiet()
}
