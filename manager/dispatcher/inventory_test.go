package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/manager/store"
)

const reconciledMetric = "lockbox_manager_container_rows_reconciled_total"

func mountedReport(cid, svc string) *dapi.MountReport {
	return &dapi.MountReport{Event: dapi.MountReport_MOUNTED, ContainerId: cid, ServiceName: svc, SecretNames: []string{"pw"}}
}

func inventory(ids ...string) *dapi.ContainerInventory {
	return &dapi.ContainerInventory{ContainerIds: ids}
}

// The lost wipe: a node reports two containers mounted; one ends, and its
// WIPED report is lost (the agent's queue overflowed, or the agent was
// killed with it queued). Until now its row said forever that the
// container holds secrets. The agent reconnects; with the first beat of
// its new session it sends its inventory, and the wiped container's row
// goes, audited as reconciled and counted; the other row stays.
func TestLostWipeIsReconciled(t *testing.T) {
	h, aud := auditHarness(t)
	d := h.d
	n1 := h.node("n1", nil)
	names := map[string]string{n1: "n1"}
	web := h.service("web", nil, h.secret("pw", "1"))
	h.sync()
	nctx := nodeContext(t, n1)

	if _, err := d.Heartbeat(nctx, &dapi.HeartbeatRequest{Reports: []*dapi.MountReport{mountedReport("c1", "web"), mountedReport("c2", "web")}}); err != nil {
		t.Fatal(err)
	}
	wantEntryFrom(t, aud.next(t), store.AuditMount, n1, "web", "c1")
	wantEntryFrom(t, aud.next(t), store.AuditMount, n1, "web", "c2")
	// c1 is wiped; its WIPED report never arrives. The agent reconnects:
	// its first beat carries no report, and its inventory.
	resp, err := d.Heartbeat(nctx, &dapi.HeartbeatRequest{Inventory: inventory("c2")})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetSendInventory() {
		t.Error("the manager asks for the inventory again after applying it")
	}
	if rows, want := h.rowsOf(web.Id, names), []string{"n1/c2 mounted pw@ "}; !slices.Equal(rows, want) {
		t.Errorf("rows = %q, want %q", rows, want)
	}
	e := aud.next(t)
	wantEntryFrom(t, e, store.AuditWipeReconciled, n1, "web", "c1")
	if e.ObjectId != web.Id || len(e.Secrets) != 0 {
		t.Errorf("reconciled entry %v: want service %s and no secrets", e, web.Id)
	}
	aud.none(t)
	if got := sample(t, d, reconciledMetric); got != 1 {
		t.Errorf("%s = %v, want 1", reconciledMetric, got)
	}
	// The WIPED report that arrives late is a no-op on the table.
	if _, err := d.Heartbeat(nctx, &dapi.HeartbeatRequest{Reports: []*dapi.MountReport{{Event: dapi.MountReport_WIPED, ContainerId: "c1", ServiceName: "web"}}, Inventory: inventory("c2")}); err != nil {
		t.Fatal(err)
	}
	wantEntryFrom(t, aud.next(t), store.AuditWipe, n1, "web", "c1")
	aud.none(t)
	if got := sample(t, d, reconciledMetric); got != 1 {
		t.Errorf("%s after the late wipe = %v, want 1", reconciledMetric, got)
	}
}

// What an inventory removes, and what it cannot: an absent one says
// nothing; an empty one empties the node's rows and no other node's; an
// oversized or invalid one is refused before anything of its beat is
// recorded.
func TestInventory(t *testing.T) {
	tooMany := make([]string, dapi.MaxInventoryContainers+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("c%d", i)
	}
	for _, tc := range []struct {
		name    string
		inv     *dapi.ContainerInventory
		refused string // in the error, when refused
		rows    []string
	}{
		{"absent", nil, "", []string{"n1/c1", "n1/c2", "n1/new", "n2/c1", "n2/c3"}},
		{"empty", inventory(), "", []string{"n2/c1", "n2/c3"}},
		{"names the other node's container", inventory("c3"), "", []string{"n2/c1", "n2/c3"}},
		{"lists everything", inventory("c1", "c2", "new"), "", []string{"n1/c1", "n1/c2", "n1/new", "n2/c1", "n2/c3"}},
		{"oversized", inventory(tooMany...), "at most 2048 containers", []string{"n1/c1", "n1/c2", "n2/c1", "n2/c3"}},
		{"an empty ID", inventory("c1", ""), "container inventory", []string{"n1/c1", "n1/c2", "n2/c1", "n2/c3"}},
		{"an escape sequence", inventory("c1", "\x1b]0;x\a"), "container inventory", []string{"n1/c1", "n1/c2", "n2/c1", "n2/c3"}},
		{"overlong", inventory(strings.Repeat("c", store.MaxNodeReportField+1)), "container inventory", []string{"n1/c1", "n1/c2", "n2/c1", "n2/c3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, aud := auditHarness(t)
			d := h.d
			n1, n2 := h.node("n1", nil), h.node("n2", nil)
			names := map[string]string{n1: "n1", n2: "n2"}
			web := h.service("web", nil, h.secret("pw", "1"))
			h.sync()
			for _, b := range []struct {
				node string
				cids []string
			}{{n1, []string{"c1", "c2"}}, {n2, []string{"c1", "c3"}}} {
				var rs []*dapi.MountReport
				for _, c := range b.cids {
					rs = append(rs, mountedReport(c, "web"))
				}
				if _, err := d.Heartbeat(nodeContext(t, b.node), &dapi.HeartbeatRequest{Reports: rs}); err != nil {
					t.Fatal(err)
				}
				for range rs {
					aud.next(t)
				}
			}
			// The beat also mounts "new": refused with the inventory, it
			// is not recorded either (the agent sends it again).
			_, err := d.Heartbeat(nodeContext(t, n1), &dapi.HeartbeatRequest{Reports: []*dapi.MountReport{mountedReport("new", "web")}, Inventory: tc.inv})
			if tc.refused != "" {
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("Heartbeat = %v, want InvalidArgument with %q", err, tc.refused)
				}
				aud.none(t)
			} else if err != nil {
				t.Fatal(err)
			}
			var rows []string
			for _, r := range h.rowsOf(web.Id, names) {
				rows = append(rows, strings.Fields(r)[0])
			}
			if !slices.Equal(rows, tc.rows) {
				t.Errorf("rows = %q, want %q", rows, tc.rows)
			}
		})
	}
}

// failingTable is the store's table with a reconcile that fails.
type failingTable struct{ *store.Store }

func (failingTable) ReconcileNodeContainers(context.Context, string, []string) ([]store.ReconciledContainer, error) {
	return nil, errors.New("etcd unavailable")
}

// An inventory that cannot be applied does not fail its beat (its reports
// are recorded; failing would have the agent send them again and the log
// hold them twice): the manager asks for the inventory with the next beat.
func TestInventoryNotAppliedIsAskedAgain(t *testing.T) {
	h, aud := auditHarness(t)
	d := h.d
	d.cfg.Containers = failingTable{h.st}
	n1 := h.node("n1", nil)
	h.service("web", nil, h.secret("pw", "1"))
	h.sync()
	resp, err := d.Heartbeat(nodeContext(t, n1), &dapi.HeartbeatRequest{Reports: []*dapi.MountReport{mountedReport("c1", "web")}, Inventory: inventory()})
	if err != nil {
		t.Fatalf("Heartbeat = %v, want success", err)
	}
	wantEntryFrom(t, aud.next(t), store.AuditMount, n1, "web", "c1")
	if !resp.GetSendInventory() {
		t.Error("the manager does not ask for the inventory again")
	}
}

// The inventory's bound is the table's: an agent never holds more rows
// than it may list.
func TestInventoryBoundIsTheTables(t *testing.T) {
	if dapi.MaxInventoryContainers != store.MaxContainersPerNode {
		t.Fatalf("api/dispatcher.MaxInventoryContainers = %d, manager/store.MaxContainersPerNode = %d", dapi.MaxInventoryContainers, store.MaxContainersPerNode)
	}
}
