package dispatcher

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/ca"
	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
	"github.com/lockbox-project/lockbox/pki"
)

// signalAuditor writes through to the store and hands each committed
// entry to the test.
type signalAuditor struct {
	st *store.Store
	ch chan *types.AuditEntry
}

func (a *signalAuditor) AppendAudit(ctx context.Context, es ...*types.AuditEntry) error {
	if err := a.st.AppendAudit(ctx, es...); err != nil {
		return err
	}
	for _, e := range es {
		a.ch <- e
	}
	return nil
}

func (a *signalAuditor) AppendNodeAudit(ctx context.Context, nodeID string, es ...*types.AuditEntry) error {
	if err := a.st.AppendNodeAudit(ctx, nodeID, es...); err != nil {
		return err
	}
	for _, e := range es {
		a.ch <- e
	}
	return nil
}

func (a *signalAuditor) next(t *testing.T) *types.AuditEntry {
	t.Helper()
	select {
	case e := <-a.ch:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no audit entry in 10s")
	}
	return nil
}

func (a *signalAuditor) none(t *testing.T) {
	t.Helper()
	select {
	case e := <-a.ch:
		t.Fatalf("unexpected audit entry: %v", e)
	case <-time.After(100 * time.Millisecond):
	}
}

func wantEntry(t *testing.T, e *types.AuditEntry, action, node, service string, secrets ...string) {
	t.Helper()
	if e.Action != action || e.NodeId != node || e.ObjectName != service || strings.Join(e.Secrets, ",") != strings.Join(secrets, ",") ||
		e.Actor != store.AuditActorManager("mgr1") || e.Id == "" || e.Time == nil {
		t.Fatalf("entry %v, want %s of %s%v to %s by manager mgr1", e, action, service, secrets, node)
	}
}

// A node's grants are recorded per service when they change: given,
// changed, revoked; not again for a reconnect that changes nothing, and
// never with secret data. The live status counts the grants held.
// auditHarness runs a dispatcher ("mgr1") on a real etcd whose audit
// entries reach the returned auditor.
func auditHarness(t *testing.T) (*harness, *signalAuditor) {
	t.Helper()
	m := etcdtest.Start(t)
	ring, err := keys.NewKeyring()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ring.Close)
	st := store.New(m.Client(), ring)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	aud := &signalAuditor{st: st, ch: make(chan *types.AuditEntry, 64)}
	d := New(Config{Store: st, History: st, Audit: aud, NodeID: "mgr1", Containers: st})
	go d.Run(ctx)
	<-d.Ready()
	return &harness{t: t, st: st, d: d, ctx: ctx, nodes: map[string]string{}}, aud
}

func TestAuditGrantsPerNodeAndService(t *testing.T) {
	h, aud := auditHarness(t)
	st, d, ctx := h.st, h.d, h.ctx

	marker := "GRANT-MARKER-0b5e61c2d9"
	n1 := h.node("n1", nil)
	s1, s2 := h.secret("s1", marker), h.secret("s2", marker+"2")
	web := h.service("web", nil, s1)
	if d.LiveNode(n1) != nil {
		t.Fatal("live status of a node never served")
	}
	c := h.connect(n1, 0)
	expect(t, c.next(), dapi.SessionMessage_COMPLETE, "+secret:s1="+marker, "+service:web[s1]")
	wantEntry(t, aud.next(t), store.AuditGrant, n1, "web", "s1")
	if live := d.LiveNode(n1); live == nil || !live.Session || !live.GrantsKnown || live.GrantsHeld != 1 {
		t.Fatalf("live status %v, want a session holding 1 grant", live)
	}

	web, err := st.UpdateService(ctx, web.Id, web.Meta.Version, spec("web", nil, s1, s2))
	if err != nil {
		t.Fatal(err)
	}
	expect(t, c.next(), dapi.SessionMessage_INCREMENTAL, "+secret:s2="+marker+"2", "+service:web[s1][s2]")
	wantEntry(t, aud.next(t), store.AuditGrant, n1, "web", "s1", "s2")
	if live := d.LiveNode(n1); live.GrantsHeld != 2 {
		t.Fatalf("grants held %d, want 2", live.GrantsHeld)
	}

	// A new session with the same grants records nothing.
	c.stop()
	c2 := &conn{t: t, s: &fakeStream{ctx: ctx, ch: make(chan *dapi.SessionMessage, 64)}, errc: make(chan error, 1), stop: func() {}}
	go func() { c2.errc <- d.Serve(c2.s, n1, current(0)) }()
	expect(t, c2.next(), dapi.SessionMessage_COMPLETE, "+secret:s1="+marker, "+secret:s2="+marker+"2", "+service:web[s1][s2]")
	aud.none(t)

	if err := st.RemoveService(ctx, web.Id); err != nil {
		t.Fatal(err)
	}
	expect(t, c2.next(), dapi.SessionMessage_INCREMENTAL, "-secret:s1", "-secret:s2", "-service:web")
	wantEntry(t, aud.next(t), store.AuditRevoke, n1, "web", "s1", "s2")
	if live := d.LiveNode(n1); live.GrantsHeld != 0 || !live.GrantsKnown {
		t.Fatalf("live status %v after the revoke", live)
	}

	resp, err := st.Client().Get(ctx, st.Prefix()+"audit/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 3 {
		t.Fatalf("%d stored audit entries, want 3", len(resp.Kvs))
	}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Value), marker) {
			t.Fatalf("audit entry %s holds secret data", kv.Key)
		}
	}
}

// A full queue drops entries and says how many, instead of blocking the
// fan-out.
func TestAuditQueueFullIsCounted(t *testing.T) {
	gl := newGrantLog("mgr1", true)
	gl.queue = make(chan *types.AuditEntry, 1)
	v := view{"a": {Id: "a", Spec: &types.ServiceSpec{Name: "a"}}, "b": {Id: "b", Spec: &types.ServiceSpec{Name: "b"}}}
	gl.note("n1", v)
	if len(gl.queue) != 1 || gl.takeDropped() != 1 {
		t.Fatalf("queued %d; want 1 queued and 1 dropped", len(gl.queue))
	}
	if gl.takeDropped() != 0 {
		t.Fatal("the drop count was not reset")
	}
}

// nodeContext is a call from nodeID with a verified worker certificate.
func nodeContext(t *testing.T, nodeID string) context.Context {
	t.Helper()
	root, err := ca.NewRoot()
	if err != nil {
		t.Fatal(err)
	}
	kp, err := root.NewKeyPair(ca.CertRequest{NodeID: nodeID, Role: pki.RoleWorker})
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(kp.CertPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}}})
}

// The agents' mount and wipe reports ride on heartbeats and are recorded
// under the certificate's node, all or none; reports that break the rules
// record nothing.
func TestAuditMountReports(t *testing.T) {
	h, aud := auditHarness(t)
	d := h.d
	d.reportBudget.limit = dapi.MaxMountReports
	n1 := h.node("n1", nil)
	h.service("web", nil, h.secret("db_pw", "x"))
	h.sync()
	nctx := nodeContext(t, n1)

	_, err := d.Heartbeat(nctx, &dapi.HeartbeatRequest{Reports: []*dapi.MountReport{
		{Event: dapi.MountReport_MOUNTED, ContainerId: "c1", ServiceName: "web", SecretNames: []string{"db_pw"}},
		{Event: dapi.MountReport_WIPED, ContainerId: "c1", ServiceName: "web", SecretNames: []string{"db_pw"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, action := range []string{store.AuditMount, store.AuditWipe} {
		e := aud.next(t)
		if e.Action != action || e.Actor != store.AuditActorNode(n1) || e.NodeId != n1 || e.Container != "c1" || e.ObjectName != "web" || strings.Join(e.Secrets, ",") != "db_pw" {
			t.Fatalf("entry %v, want %s of c1 by node %s", e, action, n1)
		}
	}
	for name, reports := range map[string][]*dapi.MountReport{
		"no container":    {{ServiceName: "web"}},
		"escape sequence": {{ContainerId: "c\x1b[2J", ServiceName: "web"}},
		"too long":        {{ContainerId: strings.Repeat("c", store.MaxNodeReportField+1)}},
		"too many":        make([]*dapi.MountReport, dapi.MaxMountReports+1),
		"one bad of two":  {{ContainerId: "ok"}, {ContainerId: ""}},
	} {
		if _, err := d.Heartbeat(nctx, &dapi.HeartbeatRequest{Reports: reports}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	// Within one heartbeat period a node gets its budget in all (here
	// one beat's worth, for a short test: TestReportBudget has the
	// default): two went above, so a full batch now waits.
	full := make([]*dapi.MountReport, dapi.MaxMountReports)
	for i := range full {
		full[i] = &dapi.MountReport{ContainerId: "c2", ServiceName: "web"}
	}
	if _, err := d.Heartbeat(nctx, &dapi.HeartbeatRequest{Reports: full}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a batch over the period's budget: %v, want ResourceExhausted", err)
	}
	aud.none(t)
}

// The audit story, create → grant → mount → wipe, read back in
// order, with no byte of the secret anywhere in the log.
func TestAuditStory(t *testing.T) {
	h, aud := auditHarness(t)
	st, d, ctx := h.st, h.d, h.ctx
	n1 := h.node("n1", nil)

	marker := "STORY-MARKER-5aa9c03e18"
	admin := store.WithAuditActor(ctx, "admin-0123456789ab")
	sec, err := st.CreateSecret(admin, &types.SecretSpec{Name: "db_pw"}, []byte(marker))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateService(admin, spec("web", nil, sec)); err != nil {
		t.Fatal(err)
	}
	c := h.connect(n1, 0)
	expect(t, c.next(), dapi.SessionMessage_COMPLETE, "+secret:db_pw="+marker, "+service:web[db_pw]")
	aud.next(t) // the grant
	nctx := nodeContext(t, n1)
	for _, ev := range []dapi.MountReport_Event{dapi.MountReport_MOUNTED, dapi.MountReport_WIPED} {
		if _, err := d.Heartbeat(nctx, &dapi.HeartbeatRequest{Reports: []*dapi.MountReport{{Event: ev, ContainerId: "c1", ServiceName: "web", SecretNames: []string{"db_pw"}}}}); err != nil {
			t.Fatal(err)
		}
		aud.next(t)
	}
	got := auditLines(ctx, t, st, func(e *types.AuditEntry) string {
		if strings.Contains(e.String(), marker) {
			t.Fatalf("entry %v holds the secret", e)
		}
		return e.Actor + " " + e.Action + " " + e.ObjectName + " " + e.Container
	})
	want := []string{
		"admin-0123456789ab secret.create db_pw ",
		"admin-0123456789ab service.create web ",
		"manager mgr1 grant web ",
		"node " + n1 + " mount web c1",
		"node " + n1 + " wipe web c1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// One heartbeat's reports fit in one audit transaction.
func TestMountReportsFitOneAppend(t *testing.T) {
	if dapi.MaxMountReports > store.MaxAuditAppend {
		t.Fatalf("a heartbeat may carry %d reports, an audit append takes %d", dapi.MaxMountReports, store.MaxAuditAppend)
	}
}

// TestReportBudget: a node gets ReportBeatsPerPeriod full beats of
// reports per heartbeat period, in as many heartbeats as it likes; the
// next period starts it over; nodes do not share a budget.
func TestReportBudget(t *testing.T) {
	const period = 5 * time.Second
	full := dapi.MaxMountReports
	t0 := time.Unix(1000, 0)
	var b reportBudget
	for i := range dapi.ReportBeatsPerPeriod {
		if !b.take("n1", full, t0.Add(time.Duration(i)*time.Second), period) {
			t.Fatalf("full beat %d of %d in one period refused", i+1, dapi.ReportBeatsPerPeriod)
		}
	}
	if b.take("n1", 1, t0.Add(4*time.Second), period) {
		t.Error("a report over the period's budget was taken")
	}
	if !b.take("n2", full, t0.Add(4*time.Second), period) {
		t.Error("another node's beat was refused: budgets are per node")
	}
	if !b.take("n1", full, t0.Add(period), period) {
		t.Error("the next period's first beat was refused")
	}
}

// The grant log keeps the views it was given, which nodes share: each
// move makes entries from what changed for that node alone, a view shared
// by another node is never changed through it, and held counts the
// references of the node's last view.
func TestGrantLogSharedViews(t *testing.T) {
	svc := func(id string, version uint64, secrets ...string) *types.Service {
		sp := &types.ServiceSpec{Name: "svc-" + id}
		for _, s := range secrets {
			sp.Secrets = append(sp.Secrets, &types.SecretReference{SecretName: s})
		}
		return &types.Service{Id: id, Meta: &types.Meta{Version: version}, Spec: sp}
	}
	a1, b1 := svc("a", 1, "x", "y"), svc("b", 1, "z")
	a2same := svc("a", 2, "y", "x") // a new version, the same grants
	a3 := svc("a", 3, "x")
	shared := view{"a": a1, "b": b1}

	entries := func(gl *grantLog) []string {
		var out []string
		for len(gl.queue) > 0 {
			e := <-gl.queue
			out = append(out, e.Action+" "+e.NodeId+" "+e.ObjectName+" "+strings.Join(e.Secrets, ","))
		}
		return out
	}
	gl := newGrantLog("mgr1", true)
	gl.note("n1", shared)
	gl.note("n2", shared)
	if got := entries(gl); len(got) != 4 {
		t.Fatalf("first views: %q, want a grant of each service to each node", got)
	}
	gl.note("n1", shared) // a reconnect with the same view
	for _, step := range []struct {
		name  string
		node  string
		v     view
		cs    []change
		want  []string
		held  int
		other int // n2's grants, which no move of n1 may change
	}{
		{"same grants, new version", "n1", view{"a": a2same, "b": b1}, []change{{service: a2same}}, nil, 3, 3},
		{"grants changed", "n1", view{"a": a3, "b": b1}, []change{{service: a3}}, []string{store.AuditGrant + " n1 svc-a x"}, 2, 3},
		{"service removed", "n1", view{"a": a3}, []change{{remove: true, service: b1}}, []string{store.AuditRevoke + " n1 svc-b z"}, 1, 3},
		{"secret-only change", "n1", view{"a": a3}, []change{{secretID: "x"}}, nil, 1, 3},
	} {
		gl.noteMove(step.node, step.v, step.cs)
		if got := entries(gl); strings.Join(got, "|") != strings.Join(step.want, "|") {
			t.Errorf("%s: entries %q, want %q", step.name, got, step.want)
		}
		if n, ok := gl.held("n1"); !ok || n != step.held {
			t.Errorf("%s: n1 holds %d (known %v), want %d", step.name, n, ok, step.held)
		}
		if n, _ := gl.held("n2"); n != step.other {
			t.Errorf("%s: n2 holds %d, want %d", step.name, n, step.other)
		}
	}
	if len(shared) != 2 || shared["a"] != a1 || shared["b"] != b1 {
		t.Fatal("a view shared with another node was changed")
	}
	gl.forget("n1")
	if _, ok := gl.held("n1"); ok {
		t.Fatal("a forgotten node is still known")
	}
}

// auditLines lists the whole audit log (one page, oldest first) and returns
// line(e) for each entry.
func auditLines(ctx context.Context, t *testing.T, st *store.Store, line func(*types.AuditEntry) string) []string {
	t.Helper()
	log, _, err := st.ListAudit(ctx, time.Time{}, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	lines := make([]string, 0, len(log))
	for _, e := range log {
		lines = append(lines, line(e))
	}
	return lines
}
