package dispatcher

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
)

// countingStore counts the secret reads (each one an etcd read and an
// unseal).
type countingStore struct {
	*store.Store
	reads atomic.Int64
}

func (c *countingStore) SecretData(ctx context.Context, id string) ([]byte, error) {
	c.reads.Add(1)
	return c.Store.SecretData(ctx, id)
}

func countingHarness(t *testing.T, ttl time.Duration) (*harness, *countingStore) {
	t.Helper()
	m := etcdtest.Start(t)
	ring, err := keys.NewKeyring()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ring.Close)
	st := store.New(m.Client(), ring)
	cs := &countingStore{Store: st}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	d := New(Config{Store: cs, History: st, Managers: func() []string { return []string{"127.0.0.1:4242"} }})
	d.completeTTL = ttl
	go d.Run(ctx)
	<-d.Ready()
	return &harness{t: t, st: st, d: d, ctx: ctx, nodes: map[string]string{}}, cs
}

// Sessions that attach together share one COMPLETE build per placement:
// one secret read per secret of the view, not per session, and each node
// still gets exactly its own placement's grants. A service change is seen
// by the next attach at once (the shared sets of the old views are
// dropped), and an unused set is dropped after its TTL with its secret
// bytes zeroed.
func TestCompleteSharedPerPlacement(t *testing.T) {
	h, cs := countingHarness(t, time.Hour)
	nodes := map[string]map[string]string{
		"e1": {"zone": "east"}, "e2": {"zone": "east"}, "e3": {"zone": "east"},
		"w1": {"zone": "west"}, "w2": {"zone": "west"},
	}
	for name, labels := range nodes {
		h.node(name, labels)
	}
	s1, s2, s3 := h.secret("s1", "one"), h.secret("s2", "two"), h.secret("s3", "three")
	h.service("all", nil, s1)
	east := h.service("east", []string{"node.labels.zone==east"}, s2)
	want := map[string][]string{
		"e1": {"+secret:s1=one", "+secret:s2=two", "+service:all[s1]", "+service:east[s2]"},
		"w1": {"+secret:s1=one", "+service:all[s1]"},
	}
	want["e2"], want["e3"], want["w2"] = want["e1"], want["e1"], want["w1"]

	// All at once, as in a storm: every session gets its own placement.
	h.sync()
	var wg sync.WaitGroup
	conns := map[string]*conn{}
	for name := range nodes {
		conns[name] = h.connect(h.nodes[name], 0)
	}
	msgs := map[string]*dapi.SessionMessage{}
	var mu sync.Mutex
	for name, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := <-c.s.ch
			mu.Lock()
			msgs[name] = m
			mu.Unlock()
		}()
	}
	wg.Wait()
	for name, m := range msgs {
		expect(t, m, dapi.SessionMessage_COMPLETE, want[name]...)
	}
	// Two placements: east reads s1 and s2, west reads s1.
	if got := cs.reads.Load(); got != 3 {
		t.Fatalf("%d secret reads for 5 sessions of 2 placements, want 3", got)
	}
	if got := h.d.completeCached(); got != 2 {
		t.Fatalf("%d complete sets cached, want 2", got)
	}

	// Reconnecting with the same placement reads nothing again.
	for _, name := range []string{"e2", "w2"} {
		conns[name].stop()
		c := h.connect(h.nodes[name], 0)
		expect(t, c.next(), dapi.SessionMessage_COMPLETE, want[name]...)
	}
	if got := cs.reads.Load(); got != 3 {
		t.Fatalf("%d secret reads after reconnects of the same placements, want 3", got)
	}

	// The east service now grants s3 too: the next attach sees it, and
	// the old sets were dropped.
	if _, err := h.st.UpdateService(h.ctx, east.Id, east.Meta.Version, spec("east", []string{"node.labels.zone==east"}, s2, s3)); err != nil {
		t.Fatal(err)
	}
	conns["e1"].stop()
	c := h.connect(h.nodes["e1"], 0)
	expect(t, c.next(), dapi.SessionMessage_COMPLETE, "+secret:s1=one", "+secret:s2=two", "+secret:s3=three", "+service:all[s1]", "+service:east[s2][s3]")
	if got := h.d.completeCached(); got != 1 {
		t.Fatalf("%d complete sets cached after the services changed, want 1 (the new east view)", got)
	}
}

// An unused set is dropped after its TTL, and the secret bytes it held are
// zeroed once the sessions that sent them are done.
func TestCompleteSetExpiresZeroed(t *testing.T) {
	h, _ := countingHarness(t, 50*time.Millisecond)
	h.node("a", nil)
	h.service("svc", nil, h.secret("s", "hunter2"))
	c := h.connect(h.nodes["a"], 0)
	expect(t, c.next(), dapi.SessionMessage_COMPLETE, "+secret:s=hunter2", "+service:svc[s]")

	h.d.mu.Lock()
	var raws [][]byte
	for _, set := range h.d.completes {
		for _, it := range set.items {
			raw := it.change.ReadOnlyData()
			raws = append(raws, raw[:cap(raw)])
		}
	}
	h.d.mu.Unlock()
	if len(raws) == 0 || !func() bool {
		for _, r := range raws {
			if contains(r, "hunter2") {
				return true
			}
		}
		return false
	}() {
		t.Fatal("the cached set holds no encoding of the secret")
	}
	// The TTL runs on a timer: wait for its effect.
	deadline := time.Now().Add(10 * time.Second)
	for h.d.completeCached() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the complete set was not dropped after its TTL")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, r := range raws {
		if contains(r, "hunter2") {
			t.Fatal("secret bytes left in a dropped complete set's encoding")
		}
	}
}

// sessionStream is the gRPC server stream of a Session call in tests.
type sessionStream struct {
	grpc.ServerStream
	*fakeStream
}

func (s sessionStream) Context() context.Context { return s.fakeStream.Context() }
func (s sessionStream) SendMsg(v any) error      { return s.fakeStream.SendMsg(v) }
func (s sessionStream) Send(m *dapi.SessionMessage) error {
	return errors.New("sessions send pre-encoded messages")
}

// At most startSlots sessions start at once: with every slot taken a new
// session waits (sends nothing), leaves the queue when its agent hangs
// up, and starts as soon as a slot is free.
func TestSessionStartsAreBounded(t *testing.T) {
	h := newHarness(t)
	id := h.node("a", nil)
	h.service("svc", nil, h.secret("s", "one"))
	h.sync()
	for range startSlots {
		h.d.starting <- struct{}{}
	}
	call := func(ctx context.Context) (*fakeStream, chan error) {
		fs := &fakeStream{ctx: ctx, ch: make(chan *dapi.SessionMessage, 4)}
		errc := make(chan error, 1)
		go func() { errc <- h.d.Session(current(0), sessionStream{fakeStream: fs}) }()
		return fs, errc
	}
	who := nodeContext(t, id)
	if p, ok := peer.FromContext(who); ok {
		who = peer.NewContext(who, &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, AuthInfo: p.AuthInfo})
	}

	gone, cancel := context.WithCancel(who)
	_, errc := call(gone)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("a waiting session whose agent left: %v, want context.Canceled", err)
	}

	ctx, stop := context.WithCancel(who)
	defer stop()
	fs, errc := call(ctx)
	select {
	case m := <-fs.ch:
		t.Fatalf("a session started with no slot free: %v", summary(m))
	case err := <-errc:
		t.Fatalf("session ended: %v", err)
	case <-time.After(200 * time.Millisecond): // waiting for something that must not happen
	}
	<-h.d.starting
	select {
	case m := <-fs.ch:
		expect(t, m, dapi.SessionMessage_COMPLETE, "+secret:s=one", "+service:svc[s]")
	case err := <-errc:
		t.Fatalf("session ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no first message once a slot was free")
	}
}

// completeCached is the number of complete sets held.
func (d *Dispatcher) completeCached() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, set := range d.completes {
		if set.items != nil {
			n++
		}
	}
	return n
}
