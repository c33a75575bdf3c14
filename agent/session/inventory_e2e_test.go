package session

import (
	"context"
	"slices"
	"testing"
	"time"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/internal/testutil/managertest"
)

// serviceRows is what `service ps` lists for the service: its containers.
func serviceRows(t *testing.T, tm *managertest.Manager, service string) []string {
	t.Helper()
	resp, err := tm.Admin().ListServiceContainers(context.Background(), &adminapi.ListServiceContainersRequest{NameOrId: service})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range resp.GetContainers() {
		out = append(out, c.GetContainerId())
	}
	slices.Sort(out)
	return out
}

// waitRows waits until the service's rows are want: the manager writes
// them on heartbeats, which the test cannot observe more directly.
func waitRows(t *testing.T, tm *managertest.Manager, service string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !slices.Equal(serviceRows(t, tm, service), want) {
		if time.Now().After(deadline) {
			t.Fatalf("rows of %s: %q, want %q", service, serviceRows(t, tm, service), want)
		}
		<-tick.C
	}
}

// The lost WIPED, against a real manager: the node reports two containers
// mounted; one ends and its WIPED never reaches a manager (the agent's
// queue overflowed, or it was killed with it queued). The managers go and
// come back; the first heartbeat of the new session carries the
// inventory, and the ended container leaves service ps.
func TestLostWipeLeavesServicePs(t *testing.T) {
	tm := managertest.Start(t)
	sec := tm.Secret("a", []byte("x"))
	tm.Service("web", sec)
	holder := &fakeHolder{ids: []string{"c1", "c2"}}
	rec := newRecorder(t)
	ctx, cancel := context.WithCancel(context.Background())
	sess, err := New(ctx, Config{StateDir: t.TempDir(), Managers: []string{tm.Addr}, Token: []byte(tm.WorkerToken()), Cache: rec, Log: quietLog(),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sess.SetInventory(holder)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sess.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	rec.waitFor(t, "the snapshot", func() bool { return hasGrant(rec.Cache, "web", sec.Id) })
	for _, c := range []string{"c1", "c2"} {
		sess.Report(&dapi.MountReport{Event: dapi.MountReport_MOUNTED, ContainerId: c, ServiceName: "web", SecretNames: []string{"a"}})
	}
	waitRows(t, tm, "web", "c1", "c2")

	// c1 ends; its WIPED is lost.
	holder.set("c2")
	tm.Stop()
	waitState(t, sess, false)
	tm.Restart()
	waitState(t, sess, true)
	waitRows(t, tm, "web", "c2")
}
