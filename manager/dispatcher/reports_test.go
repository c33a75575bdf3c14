package dispatcher

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/store"
)

const droppedMetric = "lockbox_manager_mount_reports_dropped_total"

// rowsOf is service svcID's container table as "node/container state
// secrets error", node names for IDs.
func (h *harness) rowsOf(svcID string, names map[string]string) []string {
	h.t.Helper()
	rows, _, err := h.st.ListServiceContainers(h.ctx, svcID, "", 0)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		var sec []string
		for _, s := range r.Secrets {
			sec = append(sec, s.Name+"@"+s.ID)
		}
		out = append(out, fmt.Sprintf("%s/%s %s %s %s", names[r.NodeID], r.ContainerID, r.State, strings.Join(sec, ","), r.Error))
	}
	slices.Sort(out)
	return out
}

// The attack: a worker forges reports about a service placed only on
// another node (mounts, live updates, a failure, a wipe of the victim's
// container). Before reports were checked against placement, each was
// written to the audit log as that worker's word; now nothing is stored,
// the victim's row is untouched, and the drops are counted.
func TestForgedReportsStoreNothing(t *testing.T) {
	h, aud := auditHarness(t)
	d := h.d
	victim, attacker := h.node("victim", nil), h.node("attacker", nil)
	names := map[string]string{victim: "victim", attacker: "attacker"}
	pw := h.secret("db_pw", "x")
	web := h.service("web", []string{"node.hostname==victim"}, pw)
	h.service("own", []string{"node.hostname==attacker"}, pw)
	h.sync()

	if _, err := d.Heartbeat(nodeContext(t, victim), &dapi.HeartbeatRequest{Reports: []*dapi.MountReport{
		{Event: dapi.MountReport_MOUNTED, ContainerId: "c1", ServiceName: "web", SecretNames: []string{"db_pw"}, SecretIds: []string{pw.Id}},
	}}); err != nil {
		t.Fatal(err)
	}
	wantEntryFrom(t, aud.next(t), store.AuditMount, victim, "web", "c1")

	forged := []*dapi.MountReport{
		{Event: dapi.MountReport_MOUNTED, ContainerId: "c1", ServiceName: "web", SecretNames: []string{"db_pw"}},
		{Event: dapi.MountReport_UPDATED, ContainerId: "c2", ServiceName: "web", SecretNames: []string{"db_pw"}, SecretIds: []string{"forged"}},
		{Event: dapi.MountReport_UPDATE_FAILED, ContainerId: "c1", ServiceName: "web", Error: "forged"},
		{Event: dapi.MountReport_WIPED, ContainerId: "c1", ServiceName: "web"},
	}
	if _, err := d.Heartbeat(nodeContext(t, attacker), &dapi.HeartbeatRequest{Reports: forged}); err != nil {
		t.Fatal(err)
	}
	aud.none(t)
	if rows, want := h.rowsOf(web.Id, names), []string{"victim/c1 mounted db_pw@" + pw.Id + " "}; !slices.Equal(rows, want) {
		t.Errorf("rows of web = %q, want %q", rows, want)
	}
	if got := sample(t, d, droppedMetric, "reason", dropNotPlaced); got != float64(len(forged)) {
		t.Errorf("%s{reason=%s} = %v, want %d", droppedMetric, dropNotPlaced, got, len(forged))
	}
}

func wantEntryFrom(t *testing.T, e *types.AuditEntry, action, node, service, container string, secrets ...string) {
	t.Helper()
	if e.Action != action || e.Actor != store.AuditActorNode(node) || e.NodeId != node || e.ObjectName != service || e.Container != container ||
		(secrets != nil && strings.Join(e.Secrets, ",") != strings.Join(secrets, ",")) {
		t.Fatalf("entry %v, want %s of %s/%s%v by node %s", e, action, service, container, secrets, node)
	}
}

// A live update's reports reach the audit log and the container table:
// the versions applied, a failure with its reason and the files kept, and
// the wipe of a container whose service has since left the node.
func TestLiveUpdateReports(t *testing.T) {
	h, aud := auditHarness(t)
	d, st, ctx := h.d, h.st, h.ctx
	n1 := h.node("n1", nil)
	names := map[string]string{n1: "n1"}
	v1, v2 := h.secret("pw_v1", "1"), h.secret("pw_v2", "2")
	web := h.service("web", nil, v1)
	h.sync()
	nctx := nodeContext(t, n1)
	beat := func(r *dapi.MountReport) {
		t.Helper()
		if _, err := d.Heartbeat(nctx, &dapi.HeartbeatRequest{Reports: []*dapi.MountReport{r}}); err != nil {
			t.Fatal(err)
		}
	}

	beat(&dapi.MountReport{Event: dapi.MountReport_MOUNTED, ContainerId: "c1", ServiceName: "web", SecretNames: []string{"pw_v1"}, SecretIds: []string{v1.Id}})
	wantEntryFrom(t, aud.next(t), store.AuditMount, n1, "web", "c1", "pw_v1@"+v1.Id)
	beat(&dapi.MountReport{Event: dapi.MountReport_UPDATED, ContainerId: "c1", ServiceName: "web", SecretNames: []string{"pw_v2"}, SecretIds: []string{v2.Id}})
	wantEntryFrom(t, aud.next(t), store.AuditLiveUpdate, n1, "web", "c1", "pw_v2@"+v2.Id)
	if rows, want := h.rowsOf(web.Id, names), []string{"n1/c1 updated pw_v2@" + v2.Id + " "}; !slices.Equal(rows, want) {
		t.Errorf("after the update: rows = %q, want %q", rows, want)
	}
	beat(&dapi.MountReport{Event: dapi.MountReport_UPDATE_FAILED, ContainerId: "c1", ServiceName: "web", Error: "rename: device busy"})
	wantEntryFrom(t, aud.next(t), store.AuditLiveUpdateFailed, n1, "web", "c1")
	if rows, want := h.rowsOf(web.Id, names), []string{"n1/c1 update-failed pw_v2@" + v2.Id + " rename: device busy"}; !slices.Equal(rows, want) {
		t.Errorf("after the failure: rows = %q, want %q", rows, want)
	}

	// The service leaves the node; the container's end is still its word.
	if _, err := st.UpdateService(ctx, web.Id, web.Meta.Version, spec("web", []string{"node.hostname==elsewhere"}, v2)); err != nil {
		t.Fatal(err)
	}
	h.sync()
	beat(&dapi.MountReport{Event: dapi.MountReport_WIPED, ContainerId: "c1", ServiceName: "web"})
	wantEntryFrom(t, aud.next(t), store.AuditWipe, n1, "web", "c1")
	if rows := h.rowsOf(web.Id, names); len(rows) != 0 {
		t.Errorf("after the wipe: rows = %q", rows)
	}
	// A second wipe has no row and no placement behind it.
	beat(&dapi.MountReport{Event: dapi.MountReport_WIPED, ContainerId: "c1", ServiceName: "web"})
	aud.none(t)
	if got := sample(t, d, droppedMetric, "reason", dropNotPlaced); got != 1 {
		t.Errorf("%s{reason=%s} = %v, want 1", droppedMetric, dropNotPlaced, got)
	}
}

// A node at the table's cap keeps its new containers audited but gets no
// row for them, and the refusal is counted.
func TestReportsOverCap(t *testing.T) {
	h, aud := auditHarness(t)
	d, st, ctx := h.d, h.st, h.ctx
	n1 := h.node("n1", nil)
	web := h.service("web", nil, h.secret("pw", "1"))
	h.sync()
	fill := make([]store.ContainerReport, store.MaxContainersPerNode)
	for i := range fill {
		fill[i] = store.ContainerReport{ContainerID: fmt.Sprintf("c%d", i), ServiceID: web.Id, State: store.ContainerMounted}
	}
	if _, err := st.ApplyContainerReports(ctx, n1, fill); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Heartbeat(nodeContext(t, n1), &dapi.HeartbeatRequest{Reports: []*dapi.MountReport{
		{Event: dapi.MountReport_MOUNTED, ContainerId: "extra", ServiceName: "web"},
	}}); err != nil {
		t.Fatal(err)
	}
	wantEntryFrom(t, aud.next(t), store.AuditMount, n1, "web", "extra")
	if got := sample(t, d, droppedMetric, "reason", dropOverCap); got != 1 {
		t.Errorf("%s{reason=%s} = %v, want 1", droppedMetric, dropOverCap, got)
	}
}

func TestReportValidation(t *testing.T) {
	for name, r := range map[string]*dapi.MountReport{
		"unknown event":         {Event: 9, ContainerId: "c"},
		"IDs do not match":      {ContainerId: "c", SecretNames: []string{"a", "b"}, SecretIds: []string{"x"}},
		"ID with a slash":       {ContainerId: "c", SecretNames: []string{"a"}, SecretIds: []string{"../x"}},
		"error with an escape":  {Event: dapi.MountReport_UPDATE_FAILED, ContainerId: "c", Error: "x\x1b[2J"},
		"error far too long":    {Event: dapi.MountReport_UPDATE_FAILED, ContainerId: "c", Error: strings.Repeat("e", store.MaxContainerError+1)},
		"container with a NUL":  {ContainerId: "c\x00"},
		"secret name too long":  {ContainerId: "c", SecretNames: []string{strings.Repeat("n", store.MaxNodeReportField+1)}},
		"no container at all":   {Event: dapi.MountReport_UPDATED},
		"container with escape": {ContainerId: "\x1b]0;x\a"},
	} {
		if err := validateReport(r); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := validateReport(&dapi.MountReport{Event: dapi.MountReport_UPDATED, ContainerId: "c", ServiceName: "web",
		SecretNames: []string{"a", "b"}, SecretIds: []string{"x", "y"}}); err != nil {
		t.Errorf("a good report: %v", err)
	}
}

// The reports of one heartbeat are read back from the log in the order the
// node sent them (they share the manager's clock reading; the log orders
// by time, then by a random ID).
func TestReportsKeepTheirOrder(t *testing.T) {
	h, aud := auditHarness(t)
	d, st, ctx := h.d, h.st, h.ctx
	n1 := h.node("n1", nil)
	h.service("web", nil, h.secret("pw", "1"))
	h.sync()
	var want []string
	for i := range 8 {
		c := fmt.Sprintf("c%d", i)
		var batch []*dapi.MountReport
		for _, ev := range []dapi.MountReport_Event{dapi.MountReport_MOUNTED, dapi.MountReport_UPDATED, dapi.MountReport_UPDATE_FAILED, dapi.MountReport_WIPED} {
			batch = append(batch, &dapi.MountReport{Event: ev, ContainerId: c, ServiceName: "web"})
			want = append(want, reportActions[ev].action+" "+c)
		}
		if _, err := d.Heartbeat(nodeContext(t, n1), &dapi.HeartbeatRequest{Reports: batch}); err != nil {
			t.Fatal(err)
		}
		for range batch {
			aud.next(t)
		}
	}
	got := auditLines(ctx, t, st, func(e *types.AuditEntry) string { return e.Action + " " + e.Container })
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The attack, through heartbeats: after an admin's secret and service and
// the manager's grant, a node reports more containers than the audit
// log's whole retention (within its report budget), and the leader
// compacts. What the admin and the manager did is still listed; of the
// reports, the newest NodeReported. Before node reports had a budget of
// their own, the reports took the whole count and compaction removed the
// rest.
func TestNodeReportsCannotFlushAuditLog(t *testing.T) {
	h, aud := auditHarness(t)
	st, d, ctx := h.st, h.d, h.ctx
	n1 := h.node("n1", nil)
	admin := store.WithAuditActor(ctx, "admin-0123456789ab")
	sec, err := st.CreateSecret(admin, &types.SecretSpec{Name: "db_pw"}, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateService(admin, spec("web", nil, sec)); err != nil {
		t.Fatal(err)
	}
	c := h.connect(n1, 0)
	expect(t, c.next(), dapi.SessionMessage_COMPLETE, "+secret:db_pw=x", "+service:web[db_pw]")
	aud.next(t) // the grant

	keep := store.AuditRetention{Others: 3, NodeReported: 5}
	const beats, perBeat = 3, 16 // within one period's report budget
	nctx := nodeContext(t, n1)
	for b := range beats {
		var batch []*dapi.MountReport
		for i := range perBeat {
			batch = append(batch, &dapi.MountReport{Event: dapi.MountReport_MOUNTED, ContainerId: fmt.Sprint("c", b*perBeat+i), ServiceName: "web", SecretNames: []string{"db_pw"}})
		}
		if _, err := d.Heartbeat(nctx, &dapi.HeartbeatRequest{Reports: batch}); err != nil {
			t.Fatal(err)
		}
		for range batch {
			aud.next(t)
		}
	}
	if _, err := st.CompactAudit(ctx, keep); err != nil {
		t.Fatal(err)
	}
	got := auditLines(ctx, t, st, func(e *types.AuditEntry) string {
		return e.Actor + " " + e.Action + " " + e.ObjectName + " " + e.Container
	})
	want := []string{
		"admin-0123456789ab secret.create db_pw ",
		"admin-0123456789ab service.create web ",
		"manager mgr1 grant web ",
	}
	for i := beats*perBeat - keep.NodeReported; i < beats*perBeat; i++ {
		want = append(want, fmt.Sprintf("node %s mount web c%d", n1, i))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log after the flood and a compaction:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
