package shimproxy

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/ttrpc"

	"github.com/lockbox-project/lockbox/agent/localapi"
	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/plugin/claimrecord"
)

// socketAgent is the agent's local API over a real socket, recording
// releases.
type socketAgent struct {
	mu       sync.Mutex
	releases []*agent.ReleaseRequest
}

func (a *socketAgent) Prepare(context.Context, *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
	return nil, nil, localapi.Errorf(agent.Error_INVALID, "not here")
}
func (a *socketAgent) Release(context.Context, string) error { return nil }
func (a *socketAgent) ReleaseRequest(_ context.Context, r *agent.ReleaseRequest) error {
	a.mu.Lock()
	a.releases = append(a.releases, r)
	a.mu.Unlock()
	return nil
}
func (a *socketAgent) List(context.Context) (*agent.ListResponse, error) {
	return &agent.ListResponse{}, nil
}

// The shim's delete after a proxy that died: the inner shim still runs
// the task, so Stop kills, waits for and deletes it there, asks the inner
// shim to shut down, runs the inner shim's own delete, and releases from
// the record. A second Stop asks the agent nothing more.
func TestStopAfterDeadProxy(t *testing.T) {
	dir := t.TempDir()
	// The inner shim, on a unix socket as the runc shim serves.
	inner := newFakeInner()
	inner.tasks["c1"] = true
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	taskAPI.RegisterTTRPCTaskService(srv, inner)
	sock := filepath.Join(dir, "inner.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { srv.Serve(context.Background(), ln); close(served) }()
	t.Cleanup(func() { srv.Close(); <-served })

	// The inner shim's binary, for its delete: records its arguments and
	// prints an empty DeleteResponse.
	bin := filepath.Join(dir, "inner-shim")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	a := &socketAgent{}
	agentSock := filepath.Join(dir, "agent.sock")
	aln, err := localapi.Listen(agentSock)
	if err != nil {
		t.Fatal(err)
	}
	asrv := localapi.NewServer(a, nil)
	aDone := make(chan error, 1)
	go func() { aDone <- asrv.Serve(aln) }()
	t.Cleanup(func() { asrv.Close(); <-aDone })

	bundle := filepath.Join(dir, "c1")
	if err := os.Mkdir(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeState(bundle, proxyState{InnerBinary: bin, InnerAddress: "unix://" + sock, InnerVersion: 3, Address: "unix://" + filepath.Join(dir, "gone.sock")}); err != nil {
		t.Fatal(err)
	}
	if err := claimrecord.Write(bundle, claimrecord.Record{ID: "c1", Service: "web", Pid: 42, PidStart: 7}); err != nil {
		t.Fatal(err)
	}
	m := &Manager{getenv: func(k string) string {
		return map[string]string{"LOCKBOX_AGENT_SOCKET": agentSock}[k]
	}}
	ctx := namespaces.WithNamespace(context.Background(), "default")
	ctx = context.WithValue(ctx, shim.OptsKey{}, shim.Opts{BundlePath: bundle})
	if _, err := m.Stop(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if got := inner.Calls(); !reflect.DeepEqual(got, []string{"kill c1", "delete c1", "shutdown"}) {
		t.Errorf("inner shim calls %v, want kill, delete, shutdown", got)
	}
	args, err := os.ReadFile(filepath.Join(dir, "args"))
	if err != nil {
		t.Fatalf("inner shim's delete did not run: %v", err)
	}
	if s := strings.TrimSpace(string(args)); !strings.HasPrefix(s, "-namespace default -id c1") || !strings.HasSuffix(s, "-bundle "+bundle+" delete") {
		t.Errorf("inner shim's delete ran with %q", s)
	}
	a.mu.Lock()
	rel := a.releases
	a.mu.Unlock()
	if len(rel) != 1 || rel[0].GetContainerId() != "c1" || rel[0].GetPid() != 42 || rel[0].GetPidStart() != 7 {
		t.Fatalf("releases %v, want c1 naming pid 42 start 7", rel)
	}
	if r, _ := claimrecord.Read(bundle); r != nil {
		t.Errorf("record %+v kept after the release", r)
	}
	// Again (containerd retries a failed cleanup): nothing more to release.
	if _, err := m.Stop(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	n := len(a.releases)
	a.mu.Unlock()
	if n != 1 {
		t.Errorf("%d releases after a second Stop, want 1", n)
	}
}
