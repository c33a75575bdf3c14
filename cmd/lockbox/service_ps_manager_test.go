package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/agent/session"
	adminapi "github.com/lockbox-project/lockbox/api/admin"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/testutil/managertest"
	"github.com/lockbox-project/lockbox/manager/store"
)

// firstMessage is a session cache that only says when the node's first
// message arrived (it has joined, and the manager has indexed it).
type firstMessage struct {
	once sync.Once
	got  chan struct{}
	mu   sync.Mutex
	rev  uint64
}

func (f *firstMessage) Apply(m *dapi.SessionMessage) error {
	f.mu.Lock()
	f.rev = m.GetRevision()
	f.mu.Unlock()
	f.once.Do(func() { close(f.got) })
	return nil
}

func (f *firstMessage) Revision() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rev
}

func (f *firstMessage) SetNodeID(string) {}

// joinNode joins a worker named hostname to m and runs its session (the
// agent's own, over mutual TLS) until the test ends.
func joinNode(t *testing.T, m *managertest.Manager, hostname string) *session.Session {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	fm := &firstMessage{got: make(chan struct{})}
	s, err := session.New(ctx, session.Config{StateDir: t.TempDir(), Managers: []string{m.Addr}, Token: []byte(m.WorkerToken()), Cache: fm,
		Description: &types.NodeDescription{Hostname: hostname, Platform: &types.Platform{Os: "linux", Architecture: "amd64"}},
		MinBackoff:  20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-fm.got:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no first message in 30s", hostname)
	}
	return s
}

// psOf is `service ps -q --no-trunc`-like: "hostname/container state
// secrets" of each row.
func psOf(t *testing.T, cl adminapi.AdminClient, svc string) []string {
	t.Helper()
	rows, err := listServiceContainers(context.Background(), cl, svc)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		row := psRowOf(r.svc, r.c, time.Now(), true)
		out = append(out, row.Node+"/"+row.ID+" "+row.State+" "+strings.Join(row.Secrets, ","))
	}
	return out
}

// waitPs waits until service svc's rows are want: reports ride on the
// nodes' heartbeats (every 500ms here).
func waitPs(t *testing.T, cl adminapi.AdminClient, svc string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := psOf(t, cl, svc)
		if strings.Join(got, "\n") == strings.Join(want, "\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("service ps %s:\n%s\nwant:\n%s", svc, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServicePsAgainstManager: a whole manager and two agents' sessions.
// The victim's reports of a live update show in service ps and the audit
// log; the attacker, a worker holding another service, forges reports
// about the victim's service (a mount, an update of the victim's
// container, a wipe of it) in the same heartbeat as a true report about
// its own: the true one is kept, the forged ones leave nothing.
func TestServicePsAgainstManager(t *testing.T) {
	m := managertest.Start(t)
	cl := m.Admin()
	ctx := context.Background()
	v1, v2 := m.Secret("pw_v1", []byte("one")), m.Secret("pw_v2", []byte("two"))
	for name, host := range map[string]string{"web": "victim", "own": "attacker"} {
		spec := managertest.ServiceSpec(name, v1)
		spec.LiveUpdate = true
		spec.Placement = &types.Placement{Constraints: []string{"node.hostname==" + host}}
		if _, err := cl.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: spec}); err != nil {
			t.Fatal(err)
		}
	}
	victim, attacker := joinNode(t, m, "victim"), joinNode(t, m, "attacker")

	victim.Report(&dapi.MountReport{Event: dapi.MountReport_MOUNTED, ContainerId: "c1", ServiceName: "web", SecretNames: []string{"pw_v1"}, SecretIds: []string{v1.Id}})
	victim.Report(&dapi.MountReport{Event: dapi.MountReport_UPDATED, ContainerId: "c1", ServiceName: "web", SecretNames: []string{"pw_v2"}, SecretIds: []string{v2.Id}})
	waitPs(t, cl, "web", "victim/c1 updated pw_v2@"+v2.Id)

	for _, r := range []*dapi.MountReport{
		{Event: dapi.MountReport_MOUNTED, ContainerId: "c2", ServiceName: "web", SecretNames: []string{"pw_v1"}},
		{Event: dapi.MountReport_UPDATE_FAILED, ContainerId: "c1", ServiceName: "web", Error: "forged"},
		{Event: dapi.MountReport_WIPED, ContainerId: "c1", ServiceName: "web"},
		{Event: dapi.MountReport_MOUNTED, ContainerId: "c9", ServiceName: "own", SecretNames: []string{"pw_v1"}, SecretIds: []string{v1.Id}},
	} {
		attacker.Report(r)
	}
	waitPs(t, cl, "own", "attacker/c9 mounted pw_v1@"+v1.Id)
	if got := psOf(t, cl, "web"); strings.Join(got, "\n") != "victim/c1 updated pw_v2@"+v2.Id {
		t.Fatalf("web after the forged reports:\n%s", strings.Join(got, "\n"))
	}

	log, err := cl.ListAudit(ctx, &adminapi.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range log.Entries {
		if strings.HasPrefix(e.Actor, "node ") {
			got = append(got, e.Action+" "+e.ObjectName+" "+e.Container+" "+strings.Join(e.Secrets, ","))
		}
	}
	want := []string{
		store.AuditMount + " web c1 pw_v1@" + v1.Id,
		store.AuditLiveUpdate + " web c1 pw_v2@" + v2.Id,
		store.AuditMount + " own c9 pw_v1@" + v1.Id,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("nodes' audit entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
