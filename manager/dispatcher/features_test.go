package dispatcher

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/peer"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/testutil/logbuf"
	"github.com/lockbox-project/lockbox/manager/store"
)

// oldAgent is the session request of an agent built before claim rules: it
// announces nothing.
func oldAgent(resume uint64) *dapi.SessionRequest {
	return &dapi.SessionRequest{ResumeRevision: resume}
}

// leakStream is a fakeStream that also keeps every byte it was sent, to
// look for secret data in them.
type leakStream struct {
	fakeStream
	mu  sync.Mutex
	raw []byte
}

func (l *leakStream) SendMsg(v any) error {
	data, err := Codec{}.Marshal(v)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.raw = append(l.raw, data.Materialize()...)
	l.mu.Unlock()
	data.Free()
	return l.fakeStream.SendMsg(v)
}

func (l *leakStream) sent(b []byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Contains(l.raw, b)
}

// connectLeak opens a session that sends req and keeps its bytes.
func (h *harness) connectLeak(nodeID string, req *dapi.SessionRequest) (*conn, *leakStream) {
	ls := &leakStream{}
	return h.connectStream(nodeID, req, &ls.fakeStream, ls), ls
}

func ruledSpec(name string, rules []string, secrets ...*types.Secret) *types.ServiceSpec {
	sp := spec(name, nil, secrets...)
	sp.ClaimRules = rules
	return sp
}

// TestOldAgentGetsNoClaimRuledService is the attack: an agent that does not
// enforce claim rules (it announces nothing, as every agent built before
// them) on a node where a claim-ruled service is placed. It must get the
// plain service and its secrets, and neither the claim-ruled service nor
// any byte of the secrets only that service references: in the COMPLETE
// message, in a resume, and when a service it holds gains claim rules (a
// REMOVE). A current agent on the same placement gets everything.
func TestOldAgentGetsNoClaimRuledService(t *testing.T) {
	h := newHarness(t)
	old, cur := h.node("old", nil), h.node("cur", nil)
	shared := h.secret("shared", "shared-data")
	plainOnly := h.secret("plainonly", "plain-data")
	ruledOnly := h.secret("ruledonly", "RULED-ONLY-1")
	rules := []string{"containerd.namespace==prod"}
	plain := h.service("plain", nil, plainOnly, shared)
	if _, err := h.st.CreateService(h.ctx, ruledSpec("ruled", rules, ruledOnly, shared)); err != nil {
		t.Fatal(err)
	}

	co, lo := h.connectLeak(old, oldAgent(0))
	first := co.next()
	expect(t, first, dapi.SessionMessage_COMPLETE, "+secret:shared=shared-data", "+secret:plainonly=plain-data", "+service:plain[plainonly][shared]")
	cc := h.connect(cur, 0)
	expect(t, cc.next(), dapi.SessionMessage_COMPLETE, "+secret:shared=shared-data", "+secret:plainonly=plain-data", "+secret:ruledonly=RULED-ONLY-1",
		"+service:plain[plainonly][shared]", "+service:ruled[ruledonly][shared]")

	// While the old agent is away, another claim-ruled service and a plain
	// one arrive: its resume brings only the plain one.
	co.stop()
	<-co.errc
	ruledOnly2 := h.secret("ruledonly2", "RULED-ONLY-2")
	if _, err := h.st.CreateService(h.ctx, ruledSpec("ruled2", rules, ruledOnly2)); err != nil {
		t.Fatal(err)
	}
	// Each change is awaited before the next is made: a session sends
	// what is queued when it gets to send, so two quick changes may
	// arrive as one message.
	expect(t, cc.next(), dapi.SessionMessage_INCREMENTAL, "+secret:ruledonly2=RULED-ONLY-2", "+service:ruled2[ruledonly2]")
	plain2Only := h.secret("plain2only", "plain2-data")
	h.service("plain2", nil, plain2Only)
	expect(t, cc.next(), dapi.SessionMessage_INCREMENTAL, "+secret:plain2only=plain2-data", "+service:plain2[plain2only]")
	co, lo2 := h.connectLeak(old, oldAgent(first.Revision))
	expect(t, co.next(), dapi.SessionMessage_INCREMENTAL, "+secret:plain2only=plain2-data", "+service:plain2[plain2only]")

	// A service the old agent holds gains claim rules: it is removed, with
	// the secrets only it referenced there.
	if _, err := h.st.UpdateService(h.ctx, plain.Id, plain.Meta.Version, ruledSpec("plain", rules, plainOnly, shared)); err != nil {
		t.Fatal(err)
	}
	expect(t, co.next(), dapi.SessionMessage_INCREMENTAL, "-service:plain", "-secret:plainonly", "-secret:shared")
	expect(t, cc.next(), dapi.SessionMessage_INCREMENTAL, "+service:plain[plainonly][shared]")

	// And one that loses them is added.
	ruled2, err := h.st.GetService(h.ctx, "ruled2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.UpdateService(h.ctx, ruled2.Id, ruled2.Meta.Version, ruledSpec("ruled2", nil, ruledOnly2)); err != nil {
		t.Fatal(err)
	}
	expect(t, co.next(), dapi.SessionMessage_INCREMENTAL, "+secret:ruledonly2=RULED-ONLY-2", "+service:ruled2[ruledonly2]")
	expect(t, cc.next(), dapi.SessionMessage_INCREMENTAL, "+service:ruled2[ruledonly2]")

	// Not a byte of what only the claim-ruled services referenced, nor
	// their rules, reached the old agent (ruled2's secret only once its
	// rules were gone, on the second session).
	never := map[*leakStream][]string{
		lo:  {"RULED-ONLY-1", ruledOnly.Id, "RULED-ONLY-2", ruledOnly2.Id, rules[0]},
		lo2: {"RULED-ONLY-1", ruledOnly.Id, rules[0]},
	}
	for ls, leaks := range never {
		for _, leak := range leaks {
			if ls.sent([]byte(leak)) {
				t.Errorf("the old agent was sent %q", leak)
			}
		}
	}
	co.quiet()
	cc.quiet()
}

// TestSamePlacementOldAndCurrentAgents: nodes with the same placement, some
// with current agents and some with old ones, attached at once. Each gets
// exactly its own set: the COMPLETE builds and the moves they share (by
// interned view) never carry a claim-ruled service to an old agent, nor
// keep one from a current agent.
func TestSamePlacementOldAndCurrentAgents(t *testing.T) {
	h := newHarness(t)
	p, r, r3 := h.secret("p", "plain-data"), h.secret("r", "RULED-DATA"), h.secret("r3", "RULED-DATA-3")
	rules := []string{"containerd.namespace==prod"}
	plain := h.service("plain", nil, p)
	ruled, err := h.st.CreateService(h.ctx, ruledSpec("ruled", rules, r))
	if err != nil {
		t.Fatal(err)
	}
	curNames, oldNames := []string{"c1", "c2", "c3"}, []string{"o1", "o2", "o3"}
	for _, name := range slicesConcat(curNames, oldNames) {
		h.node(name, nil)
	}
	h.sync()
	conns := map[string]*conn{}
	leaks := map[string]*leakStream{}
	for i := range curNames {
		// Interleaved, all attaching at once.
		conns[curNames[i]] = h.connect(h.nodes[curNames[i]], 0)
		conns[oldNames[i]], leaks[oldNames[i]] = h.connectLeak(h.nodes[oldNames[i]], oldAgent(0))
	}
	step := func(names []string, typ dapi.SessionMessage_Type, want ...string) {
		t.Helper()
		for _, name := range names {
			expect(t, conns[name].next(), typ, want...)
		}
	}
	step(curNames, dapi.SessionMessage_COMPLETE, "+secret:p=plain-data", "+secret:r=RULED-DATA", "+service:plain[p]", "+service:ruled[r]")
	step(oldNames, dapi.SessionMessage_COMPLETE, "+secret:p=plain-data", "+service:plain[p]")
	// By the services each view holds, not by the view's identity: with
	// sessions attaching at once, their ready writes change the index and
	// restart the interning between attaches, so equal views need not be
	// one object (sharing them is an economy, not what this test is about).
	if h.viewServices("c1") != h.viewServices("c2") || h.viewServices("o1") != h.viewServices("o3") || h.viewServices("c1") == h.viewServices("o1") {
		t.Fatalf("views by node: c1 %s, c2 %s, o1 %s, o3 %s; want one per placement and announcement",
			h.viewServices("c1"), h.viewServices("c2"), h.viewServices("o1"), h.viewServices("o3"))
	}

	// plain gains claim rules: removed from the old agents only.
	if _, err := h.st.UpdateService(h.ctx, plain.Id, plain.Meta.Version, ruledSpec("plain", rules, p)); err != nil {
		t.Fatal(err)
	}
	step(curNames, dapi.SessionMessage_INCREMENTAL, "+service:plain[p]")
	step(oldNames, dapi.SessionMessage_INCREMENTAL, "-service:plain", "-secret:p")

	// A new claim-ruled service: the current agents only.
	if _, err := h.st.CreateService(h.ctx, ruledSpec("ruled3", rules, r3)); err != nil {
		t.Fatal(err)
	}
	step(curNames, dapi.SessionMessage_INCREMENTAL, "+secret:r3=RULED-DATA-3", "+service:ruled3[r3]")

	// ruled loses its rules: now the old agents get it too.
	if _, err := h.st.UpdateService(h.ctx, ruled.Id, ruled.Meta.Version, ruledSpec("ruled", nil, r)); err != nil {
		t.Fatal(err)
	}
	step(curNames, dapi.SessionMessage_INCREMENTAL, "+service:ruled[r]")
	step(oldNames, dapi.SessionMessage_INCREMENTAL, "+secret:r=RULED-DATA", "+service:ruled[r]")
	for _, name := range oldNames {
		conns[name].quiet()
		if ls := leaks[name]; ls.sent([]byte("RULED-DATA-3")) || ls.sent([]byte(r3.Id)) || ls.sent([]byte(rules[0])) {
			t.Errorf("old agent %s was sent a claim-ruled service's data or rules", name)
		}
	}
}

func slicesConcat(a, b []string) []string { return append(append([]string(nil), a...), b...) }

// TestServable is the rule itself.
func TestServable(t *testing.T) {
	plain := &types.Service{Spec: &types.ServiceSpec{Name: "plain"}}
	ruled := &types.Service{Spec: &types.ServiceSpec{Name: "ruled", ClaimRules: []string{"k8s.namespace==a"}}}
	for _, tc := range []struct {
		name string
		req  *dapi.SessionRequest
		svc  *types.Service
		want bool
	}{
		{"old agent, plain service", oldAgent(0), plain, true},
		{"old agent, claim rules", oldAgent(0), ruled, false},
		{"live update only, claim rules", &dapi.SessionRequest{Features: []dapi.AgentFeature{dapi.AgentFeature_AGENT_FEATURE_LIVE_UPDATE}}, ruled, false},
		{"unknown feature numbers, claim rules", &dapi.SessionRequest{Features: []dapi.AgentFeature{0, 99}}, ruled, false},
		{"current agent, claim rules", current(0), ruled, true},
		{"current agent, plain service", current(0), plain, true},
	} {
		if got := capsOf(tc.req).servable(tc.svc); got != tc.want {
			t.Errorf("%s: servable %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestSessionWarnings: the node shows the manager's warning while its
// agent does not enforce claim rules, and loses it once the agent does;
// the agent's own warnings stay, within the store's limit.
func TestSessionWarnings(t *testing.T) {
	many := make([]string, store.MaxNodeWarnings)
	for i := range many {
		many[i] = "agent warning"
	}
	for _, tc := range []struct {
		name  string
		agent []string
		c     caps
		want  []string
	}{
		{"current, none", nil, allCaps, nil},
		{"current, agent's kept", []string{"a"}, allCaps, []string{"a"}},
		{"current, an earlier session's manager warning dropped", []string{"a", noClaimRulesWarning}, allCaps, []string{"a"}},
		{"current, an older manager's wording dropped", []string{"manager: older words", "a"}, allCaps, []string{"a"}},
		{"current, an agent's warning posing as the manager's dropped", []string{"manager: all is well"}, allCaps, nil},
		{"old, added", []string{"a"}, caps{}, []string{"a", noClaimRulesWarning}},
		{"old, not twice", []string{noClaimRulesWarning}, caps{}, []string{noClaimRulesWarning}},
		{"old, within the limit", many, caps{}, append(slicesConcat(nil, many[:store.MaxNodeWarnings-1]), noClaimRulesWarning)},
	} {
		got := sessionWarnings(tc.agent, tc.c)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
		if err := store.ValidateNodeDescription(&types.NodeDescription{Warnings: got}); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}

	// Through markReady, into the store: what `lockbox node inspect` shows.
	h := newHarness(t)
	a := h.node("a", nil)
	warnings := func() []string {
		n, err := h.st.GetNode(h.ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		return n.GetDescription().GetWarnings()
	}
	desc := &types.NodeDescription{AgentVersion: "0.9.0", Warnings: []string{"state dir not encrypted"}}
	if _, err := h.d.markReady(h.ctx, a, desc, "", capsOf(oldAgent(0))); err != nil {
		t.Fatal(err)
	}
	if got := warnings(); !slices.Equal(got, []string{"state dir not encrypted", noClaimRulesWarning}) {
		t.Fatalf("old agent: warnings %q", got)
	}
	if _, err := h.d.markReady(h.ctx, a, desc, "", capsOf(current(0))); err != nil {
		t.Fatal(err)
	}
	if got := warnings(); !slices.Equal(got, []string{"state dir not encrypted"}) {
		t.Fatalf("upgraded agent: warnings %q", got)
	}
}

// TestEncodedServiceHasNoUnknownFields: a service with every field set, as
// the dispatcher pre-encodes it, decodes with no field a current agent does
// not know (it would refuse every claim of it, agent/grants), and carries
// every field of ServiceGrants: one the dispatcher forgot to fill would be
// a rule that never reaches the agents.
func TestEncodedServiceHasNoUnknownFields(t *testing.T) {
	svc := &types.Service{Id: "svc-1", Meta: &types.Meta{Version: 3}, Spec: &types.ServiceSpec{
		Name:       "db",
		ClaimRules: []string{"k8s.namespace==payments"},
		LiveUpdate: true,
		Placement:  &types.Placement{Constraints: []string{"node.labels.zone==east"}},
		Secrets: []*types.SecretReference{{SecretId: "sec-1", SecretName: "pw", Signal: "SIGHUP",
			Target: &types.FileTarget{Name: "pw", Uid: "1", Gid: "2", Mode: 0o400}}},
	}}
	enc, err := encodeChange(newChange(change{service: svc}, nil), false)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Free()
	m, err := decode(&encodedMessage{rev: 5, revHead: revHeader(dapi.SessionMessage_INCREMENTAL, 5),
		sessHead: sessionHeader("node-1", 5000, []string{"10.0.0.1:4243"}), changes: []mem.Buffer{enc}})
	if err != nil {
		t.Fatal(err)
	}
	if dapi.HasUnknownFields(m) {
		t.Fatalf("decoded with unknown fields: %v", m)
	}
	sg := m.GetChanges()[0].GetAssignment().GetService()
	fields := sg.ProtoReflect().Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		if fd := fields.Get(i); !sg.ProtoReflect().Has(fd) {
			t.Errorf("ServiceGrants.%s is not sent (serviceGrants)", fd.Name())
		}
	}
}

// TestSessionRPCOfOldAgent: through the Session RPC (certificate identity,
// "ready" write), an old agent's session is withheld the claim-ruled
// service, its node carries the manager's warning, and the manager logs
// it once per session, naming no service and no secret; a current
// agent's session on the same node clears the warning.
func TestSessionRPCOfOldAgent(t *testing.T) {
	h := newHarness(t)
	logs := &logbuf.Buffer{}
	d := New(Config{Store: h.st, History: h.st, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	go d.Run(ctx)
	<-d.Ready()
	h.d = d
	a := h.node("a", nil)
	p, r := h.secret("p", "plain-data"), h.secret("r", "RULED-DATA")
	h.service("plain", nil, p)
	if _, err := h.st.CreateService(h.ctx, ruledSpec("ruled", []string{"containerd.namespace==prod"}, r)); err != nil {
		t.Fatal(err)
	}
	h.sync()
	open := func(req *dapi.SessionRequest) (*fakeStream, context.CancelFunc, chan error) {
		who := nodeContext(t, a)
		if pr, ok := peer.FromContext(who); ok {
			who = peer.NewContext(who, &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, AuthInfo: pr.AuthInfo})
		}
		sctx, stop := context.WithCancel(who)
		fs := &fakeStream{ctx: sctx, ch: make(chan *dapi.SessionMessage, 4)}
		errc := make(chan error, 1)
		go func() { errc <- d.Session(req, sessionStream{fakeStream: fs}) }()
		return fs, stop, errc
	}
	next := func(fs *fakeStream) *dapi.SessionMessage {
		t.Helper()
		select {
		case m := <-fs.ch:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no message in 10s")
		}
		return nil
	}
	warned := func() bool {
		n, err := h.st.GetNode(h.ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		return slices.Contains(n.GetDescription().GetWarnings(), noClaimRulesWarning)
	}

	req := oldAgent(0)
	req.Description = &types.NodeDescription{AgentVersion: "0.9.0"}
	fs, stop, errc := open(req)
	expect(t, next(fs), dapi.SessionMessage_COMPLETE, "+secret:p=plain-data", "+service:plain[p]")
	if !warned() {
		t.Error("the node of an old agent carries no warning")
	}
	out := logs.String()
	if strings.Count(out, "does not announce claim-rule enforcement") != 1 || !strings.Contains(out, "agent_version=0.9.0") {
		t.Errorf("want one log line naming the agent version, got:\n%s", out)
	}
	for _, leak := range []string{"ruled", "RULED-DATA", "plain-data", r.Id} {
		if strings.Contains(out, leak) {
			t.Errorf("the log names %q:\n%s", leak, out)
		}
	}
	stop()
	<-errc

	fs, stop, errc = open(current(0))
	defer func() { stop(); <-errc }()
	expect(t, next(fs), dapi.SessionMessage_COMPLETE, "+secret:p=plain-data", "+secret:r=RULED-DATA", "+service:plain[p]", "+service:ruled[r]")
	if warned() {
		t.Error("the warning stayed after a current agent's session")
	}
	if n := strings.Count(logs.String(), "does not announce claim-rule enforcement"); n != 1 {
		t.Errorf("%d log lines after a current agent's session, want still 1", n)
	}
}

// viewServices is the IDs of the services in the view the session of node
// name holds now, sorted.
func (h *harness) viewServices(name string) string {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	ids := make([]string, 0)
	for id := range h.d.sessions[h.nodes[name]].view {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return strings.Join(ids, ",")
}
