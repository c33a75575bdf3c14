//go:build linux

package shim

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/agent/localapi"
	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/api/claim"
	"github.com/lockbox-project/lockbox/plugin/claimrecord"
)

// fakeTasks is the runc task service as far as the wrapper uses it: it
// records the calls and, at Create, the bundle's mounts as runc would see
// them.
type fakeTasks struct {
	taskAPI.TTRPCTaskService
	mu        sync.Mutex
	calls     []string
	createErr error
	pid       uint32
	mountsAt  []string
	// mounts are the bundle's mounts at Create, whole.
	mounts []mountSpec
	// onDelete, if set, runs in Delete (runc's delete).
	onDelete func()
	// deleteErr, if set, is runc's delete's answer.
	deleteErr error
}

type mountSpec struct {
	Destination, Type, Source string
	Options                   []string
}

func (f *fakeTasks) record(call string) {
	f.mu.Lock()
	f.calls = append(f.calls, call)
	f.mu.Unlock()
}

func (f *fakeTasks) Create(_ context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	f.record("create " + r.ID)
	b, _ := os.ReadFile(filepath.Join(r.Bundle, "config.json"))
	var cfg struct {
		Mounts []mountSpec `json:"mounts"`
	}
	json.Unmarshal(b, &cfg)
	for _, m := range cfg.Mounts {
		f.mountsAt = append(f.mountsAt, m.Destination)
	}
	f.mounts = cfg.Mounts
	if f.createErr != nil {
		return nil, f.createErr
	}
	return &taskAPI.CreateTaskResponse{Pid: f.pid}, nil
}

func (f *fakeTasks) Start(_ context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	call := "start " + r.ID
	if r.ExecID != "" {
		call += "/" + r.ExecID
	}
	f.record(call)
	return &taskAPI.StartResponse{Pid: f.pid}, nil
}

func (f *fakeTasks) Kill(_ context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	f.record("kill " + r.ID)
	return &ptypes.Empty{}, nil
}

func (f *fakeTasks) Wait(_ context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	f.record("wait " + r.ID)
	return &taskAPI.WaitResponse{}, nil
}

func (f *fakeTasks) Delete(_ context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	if f.onDelete != nil {
		f.onDelete()
	}
	call := "delete " + r.ID
	if r.ExecID != "" {
		call += "/" + r.ExecID
	}
	f.record(call)
	if f.deleteErr != nil {
		return nil, f.deleteErr
	}
	return &taskAPI.DeleteResponse{}, nil
}

func (f *fakeTasks) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// fakeAgent serves the local API: it grants only service "web" and
// records the requests.
type fakeAgent struct {
	mu       sync.Mutex
	prepares []*agent.PrepareRequest
	releases []*agent.ReleaseRequest
	binds    []*agent.BindRequest
	targets  int
	// onTargets, if set, sees every targets request.
	onTargets func(*agent.TargetsRequest)
	// onPrepare, if set, sees every prepare request before it is served.
	onPrepare func(*agent.PrepareRequest)
	// handover, if set, answers a granted prepare: the mounts and their
	// fds (by default none: there is nothing to attach).
	handover func(t *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error)
	// onBind, if set, sees every bind request and answers it.
	onBind func(*agent.BindRequest) error
	// onRelease, if set, sees every release request before it is served.
	onRelease func(*agent.ReleaseRequest)
	// released is closed (and replaced) at each release served.
	released chan struct{}
}

func (a *fakeAgent) Prepare(_ context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
	a.mu.Lock()
	a.prepares = append(a.prepares, req)
	on := a.onPrepare
	a.mu.Unlock()
	if on != nil {
		on(req)
	}
	if req.GetContainer().GetService() != "web" {
		return nil, nil, localapi.Errorf(agent.Error_NOT_GRANTED, "service %q has no grant", req.GetContainer().GetService())
	}
	a.mu.Lock()
	ho := a.handover
	a.mu.Unlock()
	if ho != nil {
		return ho(req)
	}
	return &agent.PrepareResponse{}, nil, nil
}

func (a *fakeAgent) Bind(_ context.Context, req *agent.BindRequest) error {
	a.mu.Lock()
	a.binds = append(a.binds, req)
	on := a.onBind
	a.mu.Unlock()
	if on != nil {
		return on(req)
	}
	return nil
}

func (a *fakeAgent) Targets(_ context.Context, req *agent.TargetsRequest) (*agent.TargetsResponse, error) {
	a.mu.Lock()
	a.targets++
	if a.onTargets != nil {
		a.onTargets(req)
	}
	a.mu.Unlock()
	if req.GetContainer().GetService() != "web" {
		return nil, localapi.Errorf(agent.Error_NOT_GRANTED, "service %q has no grant", req.GetContainer().GetService())
	}
	return &agent.TargetsResponse{Targets: []string{"/run/secrets/db_pw", "/etc/app/cert.pem"}}, nil
}

func (a *fakeAgent) Release(context.Context, string) error { return errors.New("want ReleaseRequest") }

func (a *fakeAgent) ReleaseRequest(_ context.Context, req *agent.ReleaseRequest) error {
	a.mu.Lock()
	on := a.onRelease
	a.mu.Unlock()
	if on != nil {
		on(req)
	}
	a.mu.Lock()
	a.releases = append(a.releases, req)
	if a.released != nil {
		close(a.released)
	}
	a.released = make(chan struct{})
	a.mu.Unlock()
	return nil
}

// waitReleases waits until the agent has served n releases: the Delete's
// release is not answered, so the shim returns before the agent has it.
func (a *fakeAgent) waitReleases(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		a.mu.Lock()
		got := len(a.releases)
		if a.released == nil {
			a.released = make(chan struct{})
		}
		ch := a.released
		a.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("%d releases served after 10 s, want %d", got, n)
		}
	}
}

func (a *fakeAgent) List(context.Context) (*agent.ListResponse, error) {
	return &agent.ListResponse{}, nil
}

func (a *fakeAgent) counts() (int, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.prepares), len(a.releases)
}

func startFakeAgent(t *testing.T) (*fakeAgent, string) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := localapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	a := &fakeAgent{}
	srv := localapi.NewServer(a, nil)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return a, sock
}

// writeBundle writes a bundle whose config.json carries annotations and
// the root's read-only flag, and returns its path.
func writeBundle(t *testing.T, annotations map[string]string, readonly bool) string {
	dir := t.TempDir()
	cfg := map[string]any{
		"root":        map[string]any{"path": "rootfs", "readonly": readonly},
		"mounts":      []map[string]any{{"destination": "/proc", "type": "proc", "source": "proc"}},
		"annotations": annotations,
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCreate(t *testing.T) {
	self := uint32(os.Getpid())
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		readonly    bool
		noAgent     bool
		createErr   error
		wantErr     string
		wantCalls   []string
		wantPrepare int
		wantMounts  []string
		wantRecord  bool
		// wantRelease: the pids the agent was asked to release, in order.
		wantRelease []int32
	}{
		{name: "not claiming", annotations: nil, noAgent: true,
			wantCalls: []string{"create c1"}, wantMounts: []string{"/proc"}},
		{name: "pause container", annotations: map[string]string{"lockbox.service": "web", "io.kubernetes.cri.container-type": "sandbox"}, noAgent: true,
			wantCalls: []string{"create c1"}, wantMounts: []string{"/proc"}},
		{name: "claim", annotations: map[string]string{"lockbox.service": "web"},
			wantCalls: []string{"create c1"}, wantPrepare: 1, wantMounts: []string{"/proc"}, wantRecord: true},
		{name: "read-only rootfs gets a bind per target", annotations: map[string]string{"lockbox.service": "web"}, readonly: true,
			wantCalls: []string{"create c1"}, wantPrepare: 1, wantMounts: []string{"/proc", "/run/secrets/db_pw", "/etc/app/cert.pem"}, wantRecord: true},
		{name: "read-only rootfs, not granted fails before runc", annotations: map[string]string{"lockbox.service": "payments"}, readonly: true,
			wantErr: `claims service "payments"`},
		{name: "not granted is taken back", annotations: map[string]string{"lockbox.service": "payments"},
			wantErr: `claims service "payments"`, wantCalls: []string{"create c1", "kill c1", "wait c1", "delete c1"}, wantPrepare: 1, wantMounts: []string{"/proc"},
			wantRelease: []int32{int32(self)}},
		{name: "runc's create fails: what the agent built is released, no record left", annotations: map[string]string{"lockbox.service": "web"}, createErr: errors.New("runc: exec failed"),
			wantErr: "runc: exec failed", wantCalls: []string{"create c1"}, wantPrepare: 1, wantMounts: []string{"/proc"},
			wantRelease: []int32{0}},
		{name: "agent down fails before runc", annotations: map[string]string{"lockbox.service": "web"}, noAgent: true,
			wantErr: "lockbox agent not reachable"},
		{name: "empty service", annotations: map[string]string{"lockbox.service": ""}, noAgent: true,
			wantErr: "is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, sock := startFakeAgent(t)
			if tc.noAgent {
				sock = filepath.Join(t.TempDir(), "none.sock")
			}
			inner := &fakeTasks{pid: self, createErr: tc.createErr}
			s := newService(inner, sock)
			bundle := writeBundle(t, tc.annotations, tc.readonly)
			_, err := s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle})
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Create: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Create: %v, want an error with %q", err, tc.wantErr)
			}
			if got := inner.Calls(); !reflect.DeepEqual(got, tc.wantCalls) {
				t.Errorf("runc service calls %v, want %v", got, tc.wantCalls)
			}
			if !reflect.DeepEqual(inner.mountsAt, tc.wantMounts) {
				t.Errorf("runc created with mounts %v, want %v", inner.mountsAt, tc.wantMounts)
			}
			for _, m := range inner.mounts {
				if m.Destination == "/proc" {
					continue
				}
				if m.Type != "bind" || m.Source != claim.MountpointSource || !slices.Contains(m.Options, "ro") {
					t.Errorf("mount %+v, want a read-only bind of %s", m, claim.MountpointSource)
				}
			}
			a.mu.Lock()
			asked := a.targets
			a.mu.Unlock()
			if want := map[bool]int{false: 0, true: 1}[tc.readonly]; asked != want {
				t.Errorf("%d targets requests, want %d", asked, want)
			}
			if n, _ := a.counts(); n != tc.wantPrepare {
				t.Errorf("%d prepares, want %d", n, tc.wantPrepare)
			}
			if tc.wantPrepare > 0 {
				// Asked beside runc's create: no process yet, the mounts
				// handed over for the shim to attach.
				p := a.prepares[0]
				c := p.GetContainer()
				if p.GetAttach() || !p.GetBeforeCreate() || c.GetPid() != 0 || c.GetId() != "c1" || c.GetRootfs() != "" || c.GetReadonlyRootfs() != tc.readonly {
					t.Errorf("prepare %v", p)
				}
			}
			// Bound to runc's init once attached, and only then.
			a.mu.Lock()
			binds := a.binds
			a.mu.Unlock()
			if tc.wantErr == "" && tc.wantPrepare > 0 {
				if _, err := s.Start(context.Background(), &taskAPI.StartRequest{ID: "c1"}); err != nil {
					t.Fatalf("Start: %v", err)
				}
				a.mu.Lock()
				binds = a.binds
				a.mu.Unlock()
				if len(binds) != 1 || binds[0].GetContainerId() != "c1" || binds[0].GetPid() != int32(self) {
					t.Errorf("binds %v, want c1 to pid %d", binds, self)
				}
			} else if len(binds) != 0 {
				t.Errorf("binds %v of a container that failed or claimed nothing", binds)
			}
			rec, err := claimrecord.Read(bundle)
			if err != nil {
				t.Fatal(err)
			}
			if (rec != nil) != tc.wantRecord {
				t.Fatalf("record %+v, want one: %v", rec, tc.wantRecord)
			}
			// Written beside runc's create: it names the container, not
			// its init (recordClaim).
			if rec != nil && *rec != (claimrecord.Record{ID: "c1", Service: "web"}) {
				t.Errorf("record %+v, want c1 of web", rec)
			}
			a.mu.Lock()
			var released []int32
			for _, r := range a.releases {
				released = append(released, r.GetPid())
			}
			a.mu.Unlock()
			if !slices.Equal(released, tc.wantRelease) {
				t.Errorf("releases naming pids %v, want %v", released, tc.wantRelease)
			}
		})
	}
}

// Delete releases the recorded process once, and only for the container
// (not its execs); a second delete, or Stop after it, asks nothing more.
func TestDeleteReleasesFromRecord(t *testing.T) {
	a, sock := startFakeAgent(t)
	inner := &fakeTasks{pid: uint32(os.Getpid())}
	s := newService(inner, sock)
	bundle := writeBundle(t, map[string]string{"lockbox.service": "web"}, false)
	ctx := context.Background()
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	if _, n := a.counts(); n != 0 {
		t.Fatalf("an exec's delete released the container")
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	a.waitReleases(t, 1)
	if _, n := a.counts(); n != 1 {
		t.Fatalf("%d releases after the delete, want 1", n)
	}
	// Sent without waiting for the answer (the agent answers nothing).
	if r := a.releases[0]; !r.GetNoReply() {
		t.Errorf("the delete's release %v waits for an answer", r)
	}
	// After runc's delete the container has ended: the release need not
	// name its process (recordClaim).
	if r := a.releases[0]; r.GetContainerId() != "c1" || r.GetPid() != 0 {
		t.Errorf("release %v, want c1", r)
	}
	if rec, _ := claimrecord.Read(bundle); rec != nil {
		t.Errorf("record %+v kept after the release", rec)
	}
	if err := releaseFromDisk(ctx, sock, bundle); err != nil {
		t.Fatal(err)
	}
	if _, n := a.counts(); n != 1 {
		t.Errorf("%d releases after a second release, want 1", n)
	}
}

// A release that fails keeps the record for the manager's Stop, which
// releases from it in its own process.
func TestStopReleasesWhatDeleteCouldNot(t *testing.T) {
	parent := t.TempDir()
	bundle := filepath.Join(parent, "c1")
	if err := os.Mkdir(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := claimrecord.Write(bundle, claimrecord.Record{ID: "c1", Service: "web", Pid: 42, PidStart: 7}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := releaseFromDisk(ctx, filepath.Join(t.TempDir(), "none.sock"), bundle); err == nil {
		t.Fatal("release with no agent succeeded")
	}
	if rec, _ := claimrecord.Read(bundle); rec == nil {
		t.Fatal("failed release dropped the record")
	}

	a := stopFromSibling(ctx, t, parent, "c1")
	if _, n := a.counts(); n != 1 || a.releases[0].GetPid() != 42 || a.releases[0].GetPidStart() != 7 {
		t.Fatalf("Stop released %v, want c1 naming pid 42 start 7", a.releases)
	}
	if rec, _ := claimrecord.Read(bundle); rec != nil {
		t.Errorf("record %+v kept after Stop's release", rec)
	}
}

type fakeShim struct{ shim.Shim }

func (fakeShim) Stop(context.Context, string) (shim.StopStatus, error) {
	return shim.StopStatus{ExitedAt: time.Now()}, nil
}

type intercepting struct {
	*fakeTasks
	ic ttrpc.UnaryServerInterceptor
}

func (i intercepting) UnaryServerInterceptor() ttrpc.UnaryServerInterceptor { return i.ic }

// The wrapper keeps the runc service's interceptor (tracing) when it has
// one, and has none otherwise.
func TestWrapForwardsInterceptor(t *testing.T) {
	if _, ok := wrap(&fakeTasks{}, "").(shim.TTRPCServerUnaryOptioner); ok {
		t.Error("wrapper of a service without an interceptor has one")
	}
	called := false
	ic := func(ctx context.Context, u ttrpc.Unmarshaler, _ *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
		called = true
		return m(ctx, u)
	}
	w, ok := wrap(intercepting{&fakeTasks{}, ic}, "").(shim.TTRPCServerUnaryOptioner)
	if !ok {
		t.Fatal("wrapper dropped the service's interceptor")
	}
	w.UnaryServerInterceptor()(context.Background(), nil, nil, func(context.Context, func(any) error) (any, error) { return nil, nil })
	if !called {
		t.Error("forwarded interceptor is not the service's")
	}
}

// A container is released only after runc's delete succeeded: a delete
// runc refuses (a running task) must not cost a live container its
// secrets.
func TestReleasedAfterRuncDelete(t *testing.T) {
	a, sock := startFakeAgent(t)
	inner := &fakeTasks{pid: uint32(os.Getpid())}
	s := newService(inner, sock)
	ctx := context.Background()
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: writeBundle(t, map[string]string{"lockbox.service": "web"}, false)}); err != nil {
		t.Fatal(err)
	}
	released := -1
	inner.onDelete = func() { _, released = a.counts() }
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if released != 0 {
		t.Errorf("%d releases while runc's delete ran, want 0", released)
	}
	a.waitReleases(t, 1)
	if _, n := a.counts(); n != 1 {
		t.Errorf("%d releases after the delete, want 1", n)
	}
}

// The release is made ready beside runc's delete (record read, agent
// dialled) but sent only once runc's delete has succeeded: a delete runc
// refuses leaves the container its secrets and the record for later.
func TestReleaseWaitsForRuncDelete(t *testing.T) {
	tests := []struct {
		name       string
		deleteErr  error
		releases   int
		recordKept bool
	}{
		{"runc's delete succeeds: released, record removed", nil, 1, false},
		{"runc's delete fails: nothing released, record kept", errors.New("cannot delete running task"), 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, sock := startFakeAgent(t)
			inner := &fakeTasks{pid: uint32(os.Getpid()), deleteErr: tc.deleteErr}
			s := newService(inner, sock)
			ctx := context.Background()
			bundle := writeBundle(t, map[string]string{"lockbox.service": "web"}, false)
			if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle}); err != nil {
				t.Fatal(err)
			}
			released := -1
			inner.onDelete = func() { _, released = a.counts() }
			_, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"})
			if (err != nil) != (tc.deleteErr != nil) {
				t.Fatalf("Delete: %v, want runc's error %v", err, tc.deleteErr)
			}
			if released != 0 {
				t.Errorf("%d releases while runc's delete ran, want 0", released)
			}
			// A release is served after the delete returns (not
			// answered); one that was never sent is not there when the
			// delete returns, and never comes.
			a.waitReleases(t, tc.releases)
			if _, n := a.counts(); n != tc.releases {
				t.Errorf("%d releases after the delete, want %d", n, tc.releases)
			}
			if rec, _ := claimrecord.Read(bundle); (rec != nil) != tc.recordKept {
				t.Errorf("record after the delete: %+v, want kept %v", rec, tc.recordKept)
			}
		})
	}
}

// The claim record is written beside runc's create but is on disk before
// the agent is asked for anything: a shim killed once it has asked still
// leaves its manager's Stop a record to release from.
func TestClaimRecordedBeforePrepare(t *testing.T) {
	a, sock := startFakeAgent(t)
	bundle := writeBundle(t, map[string]string{"lockbox.service": "web"}, false)
	// A channel, not a variable: the agent's goroutine is ordered with
	// the test only through the socket, which the race detector cannot see.
	seen := make(chan *claimrecord.Record, 1)
	a.mu.Lock()
	a.onPrepare = func(*agent.PrepareRequest) {
		rec, _ := claimrecord.Read(bundle)
		seen <- rec
	}
	a.mu.Unlock()
	s := newService(&fakeTasks{pid: uint32(os.Getpid())}, sock)
	if _, err := s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	if atPrepare := <-seen; atPrepare == nil || atPrepare.ID != "c1" || atPrepare.Service != "web" {
		t.Fatalf("record when the agent was asked: %+v, want c1 of web", atPrepare)
	}
}

// The Delete's release is written, not waited for: Delete returns while
// the agent still holds the request, with the record already removed.
func TestDeleteDoesNotWaitForTheRelease(t *testing.T) {
	a, sock := startFakeAgent(t)
	holding, proceed := make(chan struct{}), make(chan struct{})
	a.mu.Lock()
	a.onRelease = func(*agent.ReleaseRequest) {
		close(holding)
		<-proceed
	}
	a.mu.Unlock()
	// The agent is let go whatever happens, so that its server can close.
	t.Cleanup(func() {
		select {
		case <-proceed:
		default:
			close(proceed)
		}
	})
	s := newService(&fakeTasks{pid: uint32(os.Getpid())}, sock)
	ctx := context.Background()
	bundle := writeBundle(t, map[string]string{"lockbox.service": "web"}, false)
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	deleted := make(chan error, 1)
	go func() {
		_, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"})
		deleted <- err
	}()
	<-holding
	select {
	case err := <-deleted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Delete waits for the agent's answer to its release")
	}
	if rec, _ := claimrecord.Read(bundle); rec != nil {
		t.Errorf("record %+v kept after the release was written", rec)
	}
	close(proceed)
	a.waitReleases(t, 1)
}

// A release that cannot be written (the agent accepted the dial, then
// died) keeps the record, and the shim manager's Stop releases from it,
// waiting for the answer.
func TestDeleteToADeadAgentKeepsTheRecord(t *testing.T) {
	parent := t.TempDir()
	bundle := filepath.Join(parent, "c1")
	if err := os.Rename(writeBundle(t, map[string]string{"lockbox.service": "web"}, false), bundle); err != nil {
		t.Fatal(err)
	}
	// An agent that serves the Create, then one that accepts the Delete's
	// dial and dies before the release is written.
	_, live := startFakeAgent(t)
	s := newService(&fakeTasks{pid: uint32(os.Getpid())}, live)
	ctx := context.Background()
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	dying := filepath.Join(t.TempDir(), "dying.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: dying, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	died := make(chan struct{})
	go func() {
		defer close(died)
		if c, err := ln.AcceptUnix(); err == nil {
			c.Close()
		}
	}()
	s.socket = dying
	inner := s.TTRPCTaskService.(*fakeTasks)
	// runc's delete ends after the agent has died: the dial beside it
	// was accepted, the write after it finds no one.
	inner.onDelete = func() { <-died }
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if rec, _ := claimrecord.Read(bundle); rec == nil {
		t.Fatal("a release that could not be written dropped the record")
	}

	a := stopFromSibling(ctx, t, parent, "c1")
	// Stop waits for the answer: the release is served when it returns.
	if _, n := a.counts(); n != 1 || a.releases[0].GetContainerId() != "c1" || a.releases[0].GetNoReply() {
		t.Fatalf("Stop released %v, want c1, answered", a.releases)
	}
	if rec, _ := claimrecord.Read(bundle); rec != nil {
		t.Errorf("record %+v kept after Stop's release", rec)
	}
}

// stopFromSibling starts a fake agent and runs the shim manager's Stop of
// id as containerd does: in the bundle of the shim's first container,
// another directory under parent. It returns the agent.
func stopFromSibling(ctx context.Context, t *testing.T, parent, id string) *fakeAgent {
	t.Helper()
	a, sock := startFakeAgent(t)
	t.Setenv("LOCKBOX_AGENT_SOCKET", sock)
	first := filepath.Join(parent, "first")
	if err := os.Mkdir(first, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(first)
	m := &lockboxManager{Shim: fakeShim{}}
	if _, err := m.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	return a
}

// The shim finds the agent where the agent listens by default, or where
// LOCKBOX_AGENT_SOCKET says.
func TestAgentSocket(t *testing.T) {
	if got := AgentSocket(func(string) string { return "" }); got != localapi.DefaultSocket {
		t.Fatalf("shim's default agent socket %q, the agent listens on %q", got, localapi.DefaultSocket)
	}
	if got := AgentSocket(func(string) string { return "/x.sock" }); got != "/x.sock" {
		t.Fatalf("LOCKBOX_AGENT_SOCKET ignored: %q", got)
	}
}

// Start waits for the agent to have bound the container to its process:
// until then nothing wipes its secrets when it exits. A bind the agent
// refuses fails the start, before runc starts anything; an exec's start
// does not wait.
func TestStartWaitsForBind(t *testing.T) {
	for _, tc := range []struct {
		name    string
		bindErr error
		wantErr string
	}{
		{"bound", nil, ""},
		{"refused", localapi.Errorf(agent.Error_INVALID, "container c1 is held for another process"),
			"the lockbox agent cannot watch the container, so nothing would wipe its secrets when it exits"},
		// What an agent from before Bind answers (dispatch's default).
		{"agent too old", localapi.Errorf(agent.Error_INVALID, "request names no operation"),
			"the lockbox agent is older than this shim"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, sock := startFakeAgent(t)
			binding, answer := make(chan struct{}), make(chan struct{})
			a.mu.Lock()
			a.onBind = func(*agent.BindRequest) error {
				close(binding)
				<-answer
				return tc.bindErr
			}
			a.mu.Unlock()
			t.Cleanup(func() {
				select {
				case <-answer:
				default:
					close(answer)
				}
			})
			inner := &fakeTasks{pid: uint32(os.Getpid())}
			s := newService(inner, sock)
			ctx := context.Background()
			if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: writeBundle(t, map[string]string{"lockbox.service": "web"}, false)}); err != nil {
				t.Fatal(err)
			}
			<-binding
			started := make(chan error, 1)
			go func() {
				_, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c1"})
				started <- err
			}()
			if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c1", ExecID: "e1"}); err != nil {
				t.Fatalf("exec start: %v", err)
			}
			select {
			case err := <-started:
				t.Fatalf("Start returned (%v) before the agent answered the bind", err)
			case <-time.After(100 * time.Millisecond):
			}
			if got := inner.Calls(); !slices.Equal(got, []string{"create c1", "start c1/e1"}) {
				t.Fatalf("runc calls %v before the bind's answer", got)
			}
			close(answer)
			err := <-started
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Start: %v", err)
				}
				if got := inner.Calls(); !slices.Equal(got, []string{"create c1", "start c1/e1", "start c1"}) {
					t.Errorf("runc calls %v", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Start: %v, want an error with %q", err, tc.wantErr)
			}
			// Not started, and killed: its secrets are attached already.
			if got := inner.Calls(); !slices.Equal(got, []string{"create c1", "start c1/e1", "kill c1", "wait c1"}) {
				t.Errorf("runc calls %v for a container the agent does not watch, want it killed and waited for, never started", got)
			}
		})
	}
}

// A handed-over mount the shim cannot attach fails the claim and takes
// the container back. Here runc's "init" is the test itself, whose root
// is the host's: the shim refuses to attach there (the secrets would land
// on the host's /run/secrets).
func TestAttachRefusesTheHostsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: a detached mount to hand over")
	}
	a, sock := startFakeAgent(t)
	a.mu.Lock()
	a.handover = func(*agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
		fs, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
		if err != nil {
			return nil, nil, err
		}
		defer unix.Close(fs)
		if err := unix.FsconfigCreate(fs); err != nil {
			return nil, nil, err
		}
		m, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY)
		if err != nil {
			return nil, nil, err
		}
		return &agent.PrepareResponse{Mounts: []*agent.MountPoint{agent.HandedOverMount("/run/secrets/lockbox-test-must-not-exist", 0)}},
			[]*os.File{os.NewFile(uintptr(m), "detached")}, nil
	}
	a.mu.Unlock()
	self := uint32(os.Getpid())
	inner := &fakeTasks{pid: self}
	s := newService(inner, sock)
	_, err := s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "c1", Bundle: writeBundle(t, map[string]string{"lockbox.service": "web"}, false)})
	if err == nil || !strings.Contains(err.Error(), "it is no container's process") {
		t.Fatalf("Create: %v, want the host's root refused", err)
	}
	if _, err := os.Lstat("/run/secrets/lockbox-test-must-not-exist"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the host has the target: %v", err)
	}
	if got, want := inner.Calls(), []string{"create c1", "kill c1", "wait c1", "delete c1"}; !slices.Equal(got, want) {
		t.Errorf("runc calls %v, want %v", got, want)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.binds) != 0 {
		t.Errorf("bound %v", a.binds)
	}
	if len(a.releases) != 1 || a.releases[0].GetPid() != int32(self) {
		t.Errorf("releases %v, want one naming pid %d", a.releases, self)
	}
}

// An agent that dies between its before-create Prepare and the Bind (it
// answered the Prepare, then its connection closed) fails the container's
// start: nothing would wipe its secrets at its exit. The record stays for
// the delete's release.
func TestBindToAGoneAgentFailsTheStart(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "dying.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	answer, err := proto.Marshal(&agent.Response{Result: &agent.Response_Prepare{Prepare: &agent.PrepareResponse{}}})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 1<<16)
		if _, err := c.Read(buf); err != nil { // the Prepare
			served <- err
			return
		}
		_, err = c.Write(answer)
		served <- err
	}()
	inner := &fakeTasks{pid: uint32(os.Getpid())}
	s := newService(inner, sock)
	bundle := writeBundle(t, map[string]string{"lockbox.service": "web"}, false)
	ctx := context.Background()
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	_, err = s.Start(ctx, &taskAPI.StartRequest{ID: "c1"})
	if err == nil || !strings.Contains(err.Error(), "nothing would wipe its secrets") {
		t.Fatalf("Start after the agent went: %v, want refused", err)
	}
	if slices.Contains(inner.Calls(), "start c1") {
		t.Errorf("runc started the container: %v", inner.Calls())
	}
	if rec, _ := claimrecord.Read(bundle); rec == nil {
		t.Error("the claim record is gone: nothing left for the delete to release")
	}
}
