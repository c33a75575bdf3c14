package store

import (
	"context"
	"testing"

	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
)

// A row the node wrote after the inventory's view was read is never
// removed on that older view: the removal's compare over the node's range
// fails, and a fresh read keeps the row.
func TestReconcileDoesNotRemoveOnAStaleView(t *testing.T) {
	ctx := context.Background()
	s := New(etcdtest.Start(t).Client(), nil)
	mount := func(cid string) {
		t.Helper()
		if _, err := s.ApplyContainerReports(ctx, "n1", []ContainerReport{{ContainerID: cid, ServiceID: "svc1", State: ContainerMounted}}); err != nil {
			t.Fatal(err)
		}
	}
	mount("old")
	idx, err := s.cli.Get(ctx, s.nodeContainerPrefix("n1"))
	if err != nil {
		t.Fatal(err)
	}
	stale := idx.Header.Revision
	// Another heartbeat of the node, between the read and the removal,
	// mounts a container again under the same ID.
	mount("old")
	removed, raced, err := s.removeRowsAt(ctx, "n1", stale, []ReconciledContainer{{ContainerID: "old", ServiceID: "svc1"}})
	if err != nil || !raced || len(removed) != 0 {
		t.Fatalf("removeRowsAt on a stale view = %v, raced %v, %v; want nothing removed, raced", removed, raced, err)
	}
	// A row of another node changing does not stop it.
	if _, err := s.ApplyContainerReports(ctx, "n10", []ContainerReport{{ContainerID: "x", ServiceID: "svc1", State: ContainerMounted}}); err != nil {
		t.Fatal(err)
	}
	idx, err = s.cli.Get(ctx, s.nodeContainerPrefix("n1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyContainerReports(ctx, "n10", []ContainerReport{{ContainerID: "y", ServiceID: "svc1", State: ContainerMounted}}); err != nil {
		t.Fatal(err)
	}
	removed, raced, err = s.removeRowsAt(ctx, "n1", idx.Header.Revision, []ReconciledContainer{{ContainerID: "old", ServiceID: "svc1"}})
	if err != nil || raced || len(removed) != 1 {
		t.Fatalf("removeRowsAt after another node's write = %v, raced %v, %v; want the row removed", removed, raced, err)
	}
}
