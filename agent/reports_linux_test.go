package agent

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	api "github.com/lockbox-project/lockbox/api/agent"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/linux"
)

type fakeReporter struct {
	mu  sync.Mutex
	got []*dapi.MountReport
}

func (f *fakeReporter) Report(r *dapi.MountReport) {
	f.mu.Lock()
	f.got = append(f.got, r)
	f.mu.Unlock()
}

// TestReportsMountAndWipe: the agent tells its reporter (the session, for
// the managers' audit log) that a container got its secrets, by name, and
// that they were wiped; nothing else, and never their data.
func TestReportsMountAndWipe(t *testing.T) {
	rep := &fakeReporter{}
	a, err := New(Config{StateDir: t.TempDir(), Grants: newCache(t), Mounter: linux.New(), Log: testLog(t), Reports: rep})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	r := busybox.NewRunc(t)
	pid := runContainer(t, r, "c1")
	ctx := context.Background()
	if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "c1", Service: "web", Pid: int32(pid)}}); err != nil {
		t.Fatal(err)
	}
	if err := a.ReleaseRequest(ctx, &api.ReleaseRequest{ContainerId: "c1", Pid: int32(pid)}); err != nil {
		t.Fatal(err)
	}
	rep.mu.Lock()
	defer rep.mu.Unlock()
	if len(rep.got) != 2 {
		t.Fatalf("reports %v, want mounted then wiped", rep.got)
	}
	m, w := rep.got[0], rep.got[1]
	if m.GetEvent() != dapi.MountReport_MOUNTED || m.GetContainerId() != "c1" || m.GetServiceName() != "web" {
		t.Errorf("first report %v, want c1 of web mounted", m)
	}
	names := slices.Sorted(slices.Values(m.GetSecretNames()))
	if !slices.Equal(names, []string{"api_key", "db_pw"}) {
		t.Errorf("mounted secrets %v, want [api_key db_pw]", names)
	}
	if w.GetEvent() != dapi.MountReport_WIPED || w.GetContainerId() != "c1" || w.GetServiceName() != "web" {
		t.Errorf("second report %v, want c1 of web wiped", w)
	}
	for _, r := range rep.got {
		for _, data := range []string{"hunter2", "k-123"} {
			if s := r.String(); strings.Contains(s, data) {
				t.Errorf("report %v carries secret data", s)
			}
		}
	}
}

// inventoryReporter checks, at each report, what the agent lists then.
type inventoryReporter struct {
	a    *Agent
	errs chan string
}

func (f *inventoryReporter) Report(r *dapi.MountReport) {
	held := slices.Contains(f.a.Containers(), r.GetContainerId())
	switch {
	case r.GetEvent() == dapi.MountReport_MOUNTED && !held:
		f.errs <- "MOUNTED of " + r.GetContainerId() + " reported before the agent lists it"
	case r.GetEvent() == dapi.MountReport_WIPED && held:
		f.errs <- "WIPED of " + r.GetContainerId() + " reported while the agent still lists it"
	}
}

// TestContainersListsWhatIsHeld: the inventory the session sends lists
// exactly the containers the agent holds, and agrees with the reports: a
// container is listed before its MOUNTED is queued and no longer listed
// when its WIPED is (an inventory taken after a batch then never misses a
// container whose mount is in the batch).
func TestContainersListsWhatIsHeld(t *testing.T) {
	rep := &inventoryReporter{errs: make(chan string, 8)}
	a, err := New(Config{StateDir: t.TempDir(), Grants: newCache(t), Mounter: linux.New(), Log: testLog(t), Reports: rep})
	if err != nil {
		t.Fatal(err)
	}
	rep.a = a
	t.Cleanup(a.Close)
	if got := a.Containers(); len(got) != 0 {
		t.Fatalf("a new agent lists %q", got)
	}
	r := busybox.NewRunc(t)
	ctx := context.Background()
	pids := map[string]int{}
	for _, id := range []string{"c2", "c1"} {
		pids[id] = runContainer(t, r, id)
		if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: id, Service: "web", Pid: int32(pids[id])}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.Containers(); !slices.Equal(got, []string{"c1", "c2"}) {
		t.Errorf("Containers() = %q, want [c1 c2]", got)
	}
	if err := a.ReleaseRequest(ctx, &api.ReleaseRequest{ContainerId: "c1", Pid: int32(pids["c1"])}); err != nil {
		t.Fatal(err)
	}
	a.wiping.wait() // a release whose holder has exited wipes after its answer
	if got := a.Containers(); !slices.Equal(got, []string{"c2"}) {
		t.Errorf("after c1's release: Containers() = %q, want [c2]", got)
	}
	close(rep.errs)
	for e := range rep.errs {
		t.Error(e)
	}
}
