package shimproxy

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/lockbox-project/lockbox/api/agent"
)

// fakeInner is an inner shim's task service: it records the calls it gets
// and keeps a set of tasks. Wait answers once exit is closed (or at
// once for a task killed or never created).
type fakeInner struct {
	pid       uint32
	createErr error

	mu     sync.Mutex
	calls  []string
	tasks  map[string]bool
	killed map[string]bool
	exit   chan struct{}
	// created holds the create requests as the inner shim got them.
	created []*taskAPI.CreateTaskRequest
}

func newFakeInner() *fakeInner {
	return &fakeInner{pid: uint32(os.Getpid()), tasks: map[string]bool{}, killed: map[string]bool{}, exit: make(chan struct{})}
}

func (f *fakeInner) record(call string) {
	f.mu.Lock()
	f.calls = append(f.calls, call)
	f.mu.Unlock()
}

// Calls returns the calls so far, without the exit watch's waits.
func (f *fakeInner) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeInner) State(_ context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	f.record("state " + r.ID)
	return &taskAPI.StateResponse{ID: r.ID, Pid: f.pid}, nil
}

func (f *fakeInner) Create(_ context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	f.record("create " + r.ID)
	if f.createErr != nil {
		return nil, f.createErr
	}
	f.mu.Lock()
	f.tasks[r.ID] = true
	f.created = append(f.created, r)
	f.mu.Unlock()
	return &taskAPI.CreateTaskResponse{Pid: f.pid}, nil
}

func (f *fakeInner) Start(_ context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	f.record("start " + r.ID)
	return &taskAPI.StartResponse{Pid: f.pid}, nil
}

func (f *fakeInner) Delete(_ context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	if r.ExecID != "" {
		f.record("delete " + r.ID + "/" + r.ExecID)
		return &taskAPI.DeleteResponse{}, nil
	}
	f.record("delete " + r.ID)
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.tasks[r.ID] {
		return nil, status.Error(codes.NotFound, "task not found")
	}
	delete(f.tasks, r.ID)
	return &taskAPI.DeleteResponse{Pid: f.pid, ExitStatus: 137}, nil
}

func (f *fakeInner) Pids(_ context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	f.record("pids " + r.ID)
	return &taskAPI.PidsResponse{}, nil
}

func (f *fakeInner) Pause(_ context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	f.record("pause " + r.ID)
	return &emptypb.Empty{}, nil
}

func (f *fakeInner) Resume(_ context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	f.record("resume " + r.ID)
	return &emptypb.Empty{}, nil
}

func (f *fakeInner) Checkpoint(_ context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	f.record("checkpoint " + r.ID)
	return &emptypb.Empty{}, nil
}

func (f *fakeInner) Kill(_ context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	f.record("kill " + r.ID)
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.tasks[r.ID] {
		return nil, status.Error(codes.NotFound, "task not found")
	}
	f.killed[r.ID] = true
	return &emptypb.Empty{}, nil
}

func (f *fakeInner) Exec(_ context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	f.record("exec " + r.ID + "/" + r.ExecID)
	return &emptypb.Empty{}, nil
}

func (f *fakeInner) ResizePty(_ context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	f.record("resizepty " + r.ID)
	return &emptypb.Empty{}, nil
}

func (f *fakeInner) CloseIO(_ context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	f.record("closeio " + r.ID)
	return &emptypb.Empty{}, nil
}

func (f *fakeInner) Update(_ context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	f.record("update " + r.ID)
	return &emptypb.Empty{}, nil
}

// Wait is not recorded: the exit watch's wait runs concurrently with the
// calls a test checks. It answers when the task was killed or is unknown,
// or when exit is closed.
func (f *fakeInner) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	f.mu.Lock()
	done := f.killed[r.ID] || !f.tasks[r.ID]
	f.mu.Unlock()
	if !done {
		select {
		case <-f.exit:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &taskAPI.WaitResponse{ExitStatus: 137}, nil
}

func (f *fakeInner) Stats(_ context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	f.record("stats " + r.ID)
	return &taskAPI.StatsResponse{}, nil
}

func (f *fakeInner) Connect(_ context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	f.record("connect " + r.ID)
	return &taskAPI.ConnectResponse{ShimPid: 1, TaskPid: f.pid}, nil
}

func (f *fakeInner) Shutdown(_ context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	f.record("shutdown")
	return &emptypb.Empty{}, nil
}

// serveFake serves register's services on a loopback TCP listener (a
// transport both Linux and wine have) and returns a client to it.
func serveFake(t *testing.T, register func(*ttrpc.Server)) *ttrpc.Client {
	t.Helper()
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	register(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(context.Background(), ln); close(done) }()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(conn)
	t.Cleanup(func() {
		client.Close()
		srv.Close()
		<-done
	})
	return client
}

// startProxy returns the proxy around a fake inner shim reached over
// ttrpc (task API v3), with a fake agent and the platform under test.
func startProxyService(t *testing.T, inner *fakeInner, ag *fakeAgent, shutdown func()) *Service {
	t.Helper()
	client := serveFake(t, func(s *ttrpc.Server) { taskAPI.RegisterTTRPCTaskService(s, inner) })
	it, err := newInnerTasks(client, 3)
	if err != nil {
		t.Fatal(err)
	}
	s := newService(it, "agent.sock", ag.dial, testPlatform(t), shutdown)
	t.Cleanup(func() {
		s.cancel()
		s.watch.Wait()
	})
	return s
}

// fakeAgent is the agent's local API: it grants service "web" only.
type fakeAgent struct {
	down bool

	mu       sync.Mutex
	prepares []*agent.PrepareRequest
	targets  []*agent.TargetsRequest
	releases []*agent.ReleaseRequest
	// released gets the ID of every release.
	released chan string
	// onPrepare, if set, runs at each prepare (a test's look at the
	// bundle at that moment).
	onPrepare func(*agent.PrepareRequest)
}

func newFakeAgent() *fakeAgent { return &fakeAgent{released: make(chan string, 16)} }

func (a *fakeAgent) dial(string) (agentClient, error) {
	if a.down {
		return nil, errors.New("dial agent: connection refused")
	}
	return a, nil
}

func (a *fakeAgent) Close() error { return nil }

func (a *fakeAgent) Targets(_ context.Context, req *agent.TargetsRequest) (*agent.TargetsResponse, error) {
	a.mu.Lock()
	a.targets = append(a.targets, req)
	a.mu.Unlock()
	if req.GetContainer().GetService() != "web" {
		return nil, errors.New(`service "` + req.GetContainer().GetService() + `" has no grant`)
	}
	return &agent.TargetsResponse{Targets: []string{"/run/secrets/db_pw"}}, nil
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
		return nil, nil, errors.New(`service "` + req.GetContainer().GetService() + `" has no grant`)
	}
	return &agent.PrepareResponse{Mounts: []*agent.MountPoint{agent.AttachedMount("/run/secrets/db_pw")}}, nil, nil
}

func (a *fakeAgent) ReleaseProcess(_ context.Context, id string, pid int32, start uint64) error {
	a.mu.Lock()
	a.releases = append(a.releases, &agent.ReleaseRequest{ContainerId: id, Pid: pid, PidStart: start})
	a.mu.Unlock()
	a.released <- id
	return nil
}

func (a *fakeAgent) counts() (prepares, releases int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.prepares), len(a.releases)
}

// writeBundle writes a bundle whose config.json carries annotations, a
// root and one mount, and returns its path.
func writeBundle(t *testing.T, annotations map[string]string) string {
	t.Helper()
	dir := tempDir(t)
	cfg := map[string]any{
		"ociVersion":  "1.2.0",
		"root":        map[string]any{"path": filepath.Join(dir, "rootfs")},
		"mounts":      []map[string]any{{"destination": "/proc", "type": "proc", "source": "proc", "x-future": 1}},
		"annotations": annotations,
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "rootfs"), 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tempDir is t.TempDir, removed entry by entry: os.RemoveAll's
// handle-based walk fails under wine ("Invalid function"), and
// hack/test-windows.sh runs these tests there.
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lockbox-shimproxy-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := removeTree(dir); err != nil {
			t.Errorf("clean up %s: %v", dir, err)
		}
	})
	return dir
}

func removeTree(p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		entries, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := removeTree(filepath.Join(p, e.Name())); err != nil {
				return err
			}
		}
	}
	return os.Remove(p)
}
