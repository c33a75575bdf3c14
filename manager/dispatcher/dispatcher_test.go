package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
)

// fakeStream collects what a session sends, decoded from the bytes Codec
// would hand gRPC.
type fakeStream struct {
	ctx context.Context
	ch  chan *dapi.SessionMessage
}

func (f *fakeStream) Context() context.Context { return f.ctx }
func (f *fakeStream) SendMsg(v any) error {
	m, err := decode(v)
	if err != nil {
		return err
	}
	// The pre-encoded parts must be exactly the fields a current agent
	// knows: it refuses every claim of a service with unknown ones.
	if dapi.HasUnknownFields(m) {
		return fmt.Errorf("sent a message with fields a current agent does not know: %v", summary(m))
	}
	select {
	case f.ch <- m:
		return nil
	case <-f.ctx.Done():
		return f.ctx.Err()
	}
}

type harness struct {
	t     *testing.T
	st    *store.Store
	d     *Dispatcher
	ctx   context.Context
	nodes map[string]string // name -> ID
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	m := etcdtest.Start(t)
	ring, err := keys.NewKeyring()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ring.Close)
	st := store.New(m.Client(), ring)
	return startDispatcher(t, st)
}

func startDispatcher(t *testing.T, st *store.Store) *harness {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	d := New(Config{
		Store:    st,
		History:  st,
		Managers: func() []string { return []string{"127.0.0.1:4242"} },
	})
	go d.Run(ctx)
	<-d.Ready()
	return &harness{t: t, st: st, d: d, ctx: ctx, nodes: map[string]string{}}
}

func (h *harness) node(name string, labels map[string]string) string {
	h.t.Helper()
	n, err := h.st.CreateNode(h.ctx, &types.Node{
		Spec:        &types.NodeSpec{Labels: labels},
		Description: &types.NodeDescription{Hostname: name, Platform: &types.Platform{Os: "linux"}},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.nodes[name] = n.Id
	return n.Id
}

func (h *harness) secret(name, data string) *types.Secret {
	h.t.Helper()
	s, err := h.st.CreateSecret(h.ctx, &types.SecretSpec{Name: name}, []byte(data))
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) service(name string, constraints []string, secrets ...*types.Secret) *types.Service {
	h.t.Helper()
	s, err := h.st.CreateService(h.ctx, spec(name, constraints, secrets...))
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func spec(name string, constraints []string, secrets ...*types.Secret) *types.ServiceSpec {
	sp := &types.ServiceSpec{Name: name, Placement: &types.Placement{Constraints: constraints}}
	for _, s := range secrets {
		sp.Secrets = append(sp.Secrets, &types.SecretReference{SecretId: s.Id, SecretName: s.Spec.Name, Target: &types.FileTarget{Name: s.Spec.Name}})
	}
	return sp
}

type conn struct {
	t    *testing.T
	s    *fakeStream
	errc chan error
	stop context.CancelFunc
}

// sync waits until the dispatcher has seen every write made so far.
func (h *harness) sync() {
	h.t.Helper()
	rev, err := h.st.Revision(h.ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	if err := h.d.WaitIndexed(ctx, rev); err != nil {
		h.t.Fatalf("dispatcher did not reach revision %d: %v", rev, err)
	}
}

// current is the session request of a current agent: it announces what
// this build enforces.
func current(resume uint64) *dapi.SessionRequest {
	return &dapi.SessionRequest{ResumeRevision: resume, Features: dapi.AgentFeatures()}
}

// connect opens a current agent's session.
func (h *harness) connect(nodeID string, resume uint64) *conn {
	return h.connectReq(nodeID, current(resume))
}

// connectReq opens a session that sends req.
func (h *harness) connectReq(nodeID string, req *dapi.SessionRequest) *conn {
	fs := &fakeStream{}
	return h.connectStream(nodeID, req, fs, fs)
}

// connectStream opens a session that sends req on stream, whose messages
// fs (the fakeStream stream is or wraps) collects.
func (h *harness) connectStream(nodeID string, req *dapi.SessionRequest, fs *fakeStream, stream Sender) *conn {
	h.sync()
	ctx, cancel := context.WithCancel(h.ctx)
	fs.ctx, fs.ch = ctx, make(chan *dapi.SessionMessage, 64)
	c := &conn{t: h.t, s: fs, errc: make(chan error, 1), stop: cancel}
	go func() { c.errc <- h.d.Serve(stream, nodeID, req) }()
	h.t.Cleanup(cancel)
	return c
}

func (c *conn) next() *dapi.SessionMessage {
	c.t.Helper()
	select {
	case m := <-c.s.ch:
		return m
	case err := <-c.errc:
		c.t.Fatalf("session ended: %v", err)
	case <-time.After(10 * time.Second):
		c.t.Fatal("no message in 10s")
	}
	return nil
}

func (c *conn) quiet() {
	c.t.Helper()
	select {
	case m := <-c.s.ch:
		c.t.Fatalf("unexpected message: %v", summary(m))
	case <-time.After(100 * time.Millisecond):
	}
}

// summary renders a message as sorted "ACTION kind:name[=data]" lines.
func summary(m *dapi.SessionMessage) []string {
	var out []string
	for _, c := range m.Changes {
		a := "+"
		if c.Action == dapi.AssignmentChange_REMOVE {
			a = "-"
		}
		switch it := c.Assignment.Item.(type) {
		case *dapi.Assignment_Secret:
			s := a + "secret:" + it.Secret.Name
			if len(it.Secret.Data) > 0 {
				s += "=" + string(it.Secret.Data)
			}
			out = append(out, s)
		case *dapi.Assignment_Service:
			s := a + "service:" + it.Service.ServiceName
			for _, g := range it.Service.Grants {
				s += "[" + g.SecretName + "]"
			}
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

func expect(t *testing.T, m *dapi.SessionMessage, typ dapi.SessionMessage_Type, want ...string) {
	t.Helper()
	got := summary(m)
	sort.Strings(want)
	if m.Type != typ || len(got) != len(want) {
		t.Fatalf("got %v %v, want %v %v", m.Type, got, typ, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("got %v %v, want %v %v", m.Type, got, typ, want)
		}
	}
}

func TestCompleteThenIncremental(t *testing.T) {
	h := newHarness(t)
	a := h.node("a", map[string]string{"zone": "east"})
	b := h.node("b", map[string]string{"zone": "west"})
	s1 := h.secret("s1", "one")
	s2 := h.secret("s2", "two")
	s3 := h.secret("s3", "three")
	east := h.service("east", []string{"node.labels.zone==east"}, s1)
	all := h.service("all", nil, s2)

	ca, cb := h.connect(a, 0), h.connect(b, 0)
	m := ca.next()
	expect(t, m, dapi.SessionMessage_COMPLETE, "+secret:s1=one", "+secret:s2=two", "+service:east[s1]", "+service:all[s2]")
	if m.NodeId != a || len(m.Managers) != 1 || m.Revision == 0 || m.HeartbeatPeriodMs == 0 {
		t.Fatalf("header: node %q managers %v rev %d hb %d", m.NodeId, m.Managers, m.Revision, m.HeartbeatPeriodMs)
	}
	// Node b gets only what is placed on it: never a's grants.
	expect(t, cb.next(), dapi.SessionMessage_COMPLETE, "+secret:s2=two", "+service:all[s2]")

	// Create: a service for the west only.
	h.service("west", []string{"node.labels.zone==west"}, s3)
	expect(t, cb.next(), dapi.SessionMessage_INCREMENTAL, "+secret:s3=three", "+service:west[s3]")
	ca.quiet()

	// Update: add a reference.
	if _, err := h.st.UpdateService(h.ctx, east.Id, east.Meta.Version, spec("east", []string{"node.labels.zone==east"}, s1, s3)); err != nil {
		t.Fatal(err)
	}
	expect(t, ca.next(), dapi.SessionMessage_INCREMENTAL, "+secret:s3=three", "+service:east[s1][s3]")
	cb.quiet()

	// Node label change: a moves west; east's grants leave at once.
	if _, err := h.st.UpdateNodeSpec(h.ctx, a, 0, &types.NodeSpec{Labels: map[string]string{"zone": "west"}}); err != nil {
		n, _ := h.st.GetNode(h.ctx, a)
		if _, err := h.st.UpdateNodeSpec(h.ctx, a, n.Meta.Version, &types.NodeSpec{Labels: map[string]string{"zone": "west"}}); err != nil {
			t.Fatal(err)
		}
	}
	expect(t, ca.next(), dapi.SessionMessage_INCREMENTAL, "-secret:s1", "-service:east", "+service:west[s3]")

	// Placement change: "all" now excludes b by ID.
	if _, err := h.st.UpdateService(h.ctx, all.Id, all.Meta.Version, spec("all", []string{"node.id!=" + b}, s2)); err != nil {
		t.Fatal(err)
	}
	expect(t, cb.next(), dapi.SessionMessage_INCREMENTAL, "-secret:s2", "-service:all")
	expect(t, ca.next(), dapi.SessionMessage_INCREMENTAL, "+service:all[s2]")

	// Remove.
	if err := h.st.RemoveService(h.ctx, "west"); err != nil {
		t.Fatal(err)
	}
	expect(t, cb.next(), dapi.SessionMessage_INCREMENTAL, "-secret:s3", "-service:west")
	expect(t, ca.next(), dapi.SessionMessage_INCREMENTAL, "-secret:s3", "-service:west")

	// Node removal ends its session.
	if _, err := h.st.RemoveNode(h.ctx, b); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-cb.errc:
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("removed node's session ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("removed node's session did not end")
	}
	// And it cannot open a new one.
	if err := h.d.Serve(&fakeStream{ctx: h.ctx, ch: make(chan *dapi.SessionMessage, 1)}, b, current(0)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("removed node opened a session: %v", err)
	}
	// Revocation ends a session too.
	h.d.EndSession(a, ErrRevoked)
	if err := <-ca.errc; !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked node's session ended with %v", err)
	}
}

func TestResume(t *testing.T) {
	h := newHarness(t)
	a := h.node("a", nil)
	s1 := h.secret("s1", "one")
	s2 := h.secret("s2", "two")
	keep := h.service("keep", nil, s1)
	gone := h.service("gone", nil, s2)
	c := h.connect(a, 0)
	first := c.next()
	expect(t, first, dapi.SessionMessage_COMPLETE, "+secret:s1=one", "+secret:s2=two", "+service:keep[s1]", "+service:gone[s2]")
	c.stop()
	<-c.errc

	// While the node is away: one service goes, one comes.
	if err := h.st.RemoveService(h.ctx, gone.Id); err != nil {
		t.Fatal(err)
	}
	s3 := h.secret("s3", "three")
	h.service("new", nil, s3)
	_ = keep

	// Resuming sends only the difference; "keep" is not resent.
	c = h.connect(a, first.Revision)
	expect(t, c.next(), dapi.SessionMessage_INCREMENTAL, "-secret:s2", "-service:gone", "+secret:s3=three", "+service:new[s3]")

	// A revision from the future (another cluster, a restored backup) gets
	// a complete set.
	c.stop()
	c = h.connect(a, 1<<40)
	expect(t, c.next(), dapi.SessionMessage_COMPLETE, "+secret:s1=one", "+secret:s3=three", "+service:keep[s1]", "+service:new[s3]")

	// A compacted revision too.
	rev, err := h.st.Revision(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.Client().Compact(h.ctx, rev); err != nil {
		t.Fatal(err)
	}
	c.stop()
	c = h.connect(a, first.Revision)
	expect(t, c.next(), dapi.SessionMessage_COMPLETE, "+secret:s1=one", "+secret:s3=three", "+service:keep[s1]", "+service:new[s3]")
}

func TestNewerSessionReplacesOlder(t *testing.T) {
	h := newHarness(t)
	a := h.node("a", nil)
	c1 := h.connect(a, 0)
	c1.next()
	c2 := h.connect(a, 0)
	c2.next()
	if err := <-c1.errc; status.Code(err) != codes.Aborted {
		t.Fatalf("older session ended with %v", err)
	}
	if h.d.Sessions() != 1 {
		t.Fatalf("%d sessions", h.d.Sessions())
	}
}

func TestHeartbeatsMarkNodesDownAndReady(t *testing.T) {
	h := newHarness(t)
	a := h.node("a", nil)
	state := func() types.NodeState {
		n, err := h.st.GetNode(h.ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		return n.State
	}
	h.sync()
	if _, err := h.d.markReady(h.ctx, a, &types.NodeDescription{Hostname: "a2"}, "10.0.0.9", allCaps); err != nil {
		t.Fatal(err)
	}
	n, _ := h.st.GetNode(h.ctx, a)
	// The session's hostname is kept apart; the joined one stays.
	if n.State != types.NodeState_NODE_STATE_READY || n.Addr != "10.0.0.9" || n.Description.Hostname != "a" || n.GetReported().GetHostname() != "a2" {
		t.Fatalf("after session start: %v", n)
	}
	period := h.d.cfg.HeartbeatPeriod
	// Two silent periods: still ready. More than three: down.
	h.d.reap(h.ctx, time.Now().Add(2*period))
	if s := state(); s != types.NodeState_NODE_STATE_READY {
		t.Fatalf("after 2 periods: %v", s)
	}
	h.d.reap(h.ctx, time.Now().Add(4*period))
	if s := state(); s != types.NodeState_NODE_STATE_DOWN {
		t.Fatalf("after 4 periods: %v", s)
	}
	// A heartbeat brings it back.
	if err := h.d.heartbeat(h.ctx, a); err != nil {
		t.Fatal(err)
	}
	if s := state(); s != types.NodeState_NODE_STATE_READY {
		t.Fatalf("after a heartbeat: %v", s)
	}
	// An unknown node's heartbeat is refused.
	if err := h.d.heartbeat(h.ctx, "nosuchnode"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("unknown node's heartbeat: %v", err)
	}
}

func TestManagersChangedReachesSessions(t *testing.T) {
	h := newHarness(t)
	a := h.node("a", nil)
	c := h.connect(a, 0)
	first := c.next()
	h.d.ManagersChanged()
	m := c.next()
	if m.Type != dapi.SessionMessage_INCREMENTAL || len(m.Changes) != 0 || m.Revision != first.Revision || len(m.Managers) != 1 {
		t.Fatalf("announcement: %v rev %d (first %d) managers %v changes %d", m.Type, m.Revision, first.Revision, m.Managers, len(m.Changes))
	}
}

func TestSlowSessionIsCutOff(t *testing.T) {
	s := newSession("n", allCaps)
	enc, err := encodeChange(&dapi.AssignmentChange{Assignment: &dapi.Assignment{Item: &dapi.Assignment_Secret{Secret: &dapi.SecretData{Data: []byte("secret")}}}}, true)
	if err != nil {
		t.Fatal(err)
	}
	raw := enc.ReadOnlyData()
	enc.Ref() // the session's reference; the fan-out keeps its own
	s.push(1, []item{{change: enc}})
	s.push(2, make([]item, maxPending))
	select {
	case <-s.done:
	default:
		t.Fatal("a session over the queue limit was not ended")
	}
	if status.Code(s.err) != codes.ResourceExhausted {
		t.Fatalf("ended with %v", s.err)
	}
	s.drop()
	if !contains(raw, "secret") {
		t.Fatal("zeroed while the fan-out still holds it")
	}
	// The fan-out's own reference goes last: then the data is zeroed.
	enc.Free()
	if contains(raw, "secret") {
		t.Fatalf("shared data not zeroed: %q", raw)
	}
}

// marshalStream encodes like gRPC does, so that -race sees concurrent
// sends of the encoded changes sessions share.
type marshalStream struct {
	ctx  context.Context
	msgs chan []byte
}

func (m *marshalStream) Context() context.Context { return m.ctx }
func (m *marshalStream) SendMsg(v any) error {
	data, err := Codec{}.Marshal(v)
	if err != nil {
		return err
	}
	m.msgs <- data.Materialize()
	data.Free()
	return nil
}

func TestSharedChangesMarshalConcurrently(t *testing.T) {
	h := newHarness(t)
	var streams []*marshalStream
	for i := 0; i < 20; i++ {
		id := h.node(fmt.Sprintf("n%d", i), nil)
		h.sync()
		s := &marshalStream{ctx: h.ctx, msgs: make(chan []byte, 8)}
		go h.d.Serve(s, id, current(0))
		<-s.msgs
		streams = append(streams, s)
	}
	sec := h.secret("s", "shared-data")
	h.service("svc", nil, sec)
	for _, s := range streams {
		var m dapi.SessionMessage
		if err := proto.Unmarshal(<-s.msgs, &m); err != nil {
			t.Fatal(err)
		}
		expect(t, &m, dapi.SessionMessage_INCREMENTAL, "+secret:s=shared-data", "+service:svc[s]")
	}
}
