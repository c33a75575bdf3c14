package localapi

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/api/agent"
)

// fakeHandler records calls and answers from its fields.
type fakeHandler struct {
	mu       sync.Mutex
	prepared []*agent.PrepareRequest
	released []string
	payload  string // written to a file whose fd Prepare returns
	dir      string
}

func (h *fakeHandler) Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
	h.mu.Lock()
	h.prepared = append(h.prepared, req)
	h.mu.Unlock()
	if p, ok := PeerFromContext(ctx); !ok || int(p.Pid) != os.Getpid() || p.UID != 0 {
		return nil, nil, Errorf(agent.Error_INVALID, "peer %+v %v", p, ok)
	}
	switch req.GetContainer().GetService() {
	case "nope":
		return nil, nil, Errorf(agent.Error_NOT_GRANTED, "service %q has no grant on node %s", "nope", "n1")
	case "boom":
		return nil, nil, errors.New("plain failure")
	}
	if req.GetAttach() {
		return &agent.PrepareResponse{Mounts: []*agent.MountPoint{{Target: "/run/secrets", FdIndex: -1}}}, nil, nil
	}
	f, err := os.CreateTemp(h.dir, "mount")
	if err != nil {
		return nil, nil, err
	}
	if _, err := f.WriteString(h.payload); err != nil {
		return nil, nil, err
	}
	return &agent.PrepareResponse{Mounts: []*agent.MountPoint{{Target: "/run/secrets", FdIndex: 0}}}, []*os.File{f}, nil
}

func (h *fakeHandler) Release(ctx context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.released = append(h.released, id)
	return nil
}

func (h *fakeHandler) List(ctx context.Context) (*agent.ListResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	resp := &agent.ListResponse{}
	for _, p := range h.prepared {
		resp.Containers = append(resp.Containers, &agent.MountedContainer{Id: p.GetContainer().GetId(), Service: p.GetContainer().GetService()})
	}
	return resp, nil
}

func startServer(t *testing.T, h Handler, path string) *Server {
	t.Helper()
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(h, nil)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	h := &fakeHandler{payload: "fd-payload", dir: dir}
	sock := filepath.Join(dir, "run", "agent.sock")
	startServer(t, h, sock)

	fi, err := os.Stat(filepath.Dir(sock))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("socket directory mode %o, want 0700", got)
	}

	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	resp, files, err := c.Prepare(ctx, &agent.PrepareRequest{Container: &agent.Container{Id: "c1", Service: "web", Pid: 42, Rootfs: "/r"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || len(resp.GetMounts()) != 1 || resp.GetMounts()[0].GetFdIndex() != 0 {
		t.Fatalf("prepare: %v, %d files", resp, len(files))
	}
	// The fd is the handler's file: read it back through the passed fd.
	b, err := io.ReadAll(io.NewSectionReader(files[0], 0, 1<<10))
	if err != nil {
		t.Fatal(err)
	}
	files[0].Close()
	if string(b) != "fd-payload" {
		t.Errorf("read %q through the passed fd", b)
	}

	h.mu.Lock()
	got := h.prepared[0].GetContainer()
	h.mu.Unlock()
	if got.GetId() != "c1" || got.GetPid() != 42 || got.GetRootfs() != "/r" {
		t.Errorf("handler saw %v", got)
	}

	resp, files, err = c.Prepare(ctx, &agent.PrepareRequest{Container: &agent.Container{Id: "c2", Service: "web", Pid: 42}, Attach: true})
	if err != nil || len(files) != 0 || resp.GetMounts()[0].GetFdIndex() != -1 {
		t.Fatalf("attach prepare: %v %d %v", resp, len(files), err)
	}

	list, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetContainers()) != 2 {
		t.Errorf("list: %v", list)
	}
	if err := c.Release(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	if len(h.released) != 1 || h.released[0] != "c1" {
		t.Errorf("released %v", h.released)
	}
	h.mu.Unlock()
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	startServer(t, &fakeHandler{dir: dir}, sock)
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	tests := []struct {
		name string
		req  *agent.PrepareRequest
		code agent.Error_Code
	}{
		{"not granted", &agent.PrepareRequest{Container: &agent.Container{Id: "x", Service: "nope"}}, agent.Error_NOT_GRANTED},
		{"untyped", &agent.PrepareRequest{Container: &agent.Container{Id: "x", Service: "boom"}}, agent.Error_UNKNOWN},
		{"no id", &agent.PrepareRequest{Container: &agent.Container{Service: "web"}}, agent.Error_INVALID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, files, err := c.Prepare(ctx, tt.req)
			if files != nil {
				t.Errorf("files on error: %v", files)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not *Error", err)
			}
			if e.Code != tt.code {
				t.Errorf("code %v, want %v (%s)", e.Code, tt.code, e.Message)
			}
		})
	}
	if err := c.Release(ctx, ""); !IsCode(err, agent.Error_INVALID) {
		t.Errorf("release of empty id: %v", err)
	}
}

func TestCanceledContext(t *testing.T) {
	// A server that never answers: the client must give up with ctx.
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *net.UnixConn, 1)
	go func() {
		c, err := ln.AcceptUnix()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.List(ctx)
		errc <- err
	}()
	sc := <-accepted
	defer sc.Close()
	// Cancel only once the request is in flight.
	var req agent.Request
	if _, err := recv(sc, &req, nil); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if _, err := c.List(context.Background()); err == nil {
		t.Fatal("client reused after a failed request")
	}
}

// childEnv makes the test binary act as a plain client (see TestMain).
const childEnv = "LOCKBOX_LOCALAPI_TEST_CLIENT"

func TestMain(m *testing.M) {
	if sock := os.Getenv(childEnv); sock != "" {
		os.Exit(runChildClient(sock))
	}
	if sock := os.Getenv(fakeAgentEnv); sock != "" {
		os.Exit(runFakeAgent(sock))
	}
	if sock := os.Getenv(sendAndExitEnv); sock != "" {
		os.Exit(runSendAndExit(sock))
	}
	os.Exit(m.Run())
}

// runChildClient exits 3 when the agent refused it with PERMISSION_DENIED.
func runChildClient(sock string) int {
	c, err := Dial(sock)
	if err != nil {
		os.Stderr.WriteString("dial: " + err.Error() + "\n")
		return 1
	}
	defer c.Close()
	_, err = c.List(context.Background())
	if IsCode(err, agent.Error_PERMISSION_DENIED) {
		return 3
	}
	if err != nil {
		os.Stderr.WriteString("list: " + err.Error() + "\n")
		return 1
	}
	return 0
}

func TestPeerCredRefusesNonRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root: it runs a client as uid 65534")
	}
	// The socket must be reachable by uid 65534 so that SO_PEERCRED, not
	// the directory mode, is what refuses it.
	dir, err := os.MkdirTemp("", "lockbox-peercred")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock", "agent.sock")
	h := &fakeHandler{dir: t.TempDir()}
	startServer(t, h, sock)
	if err := os.Chmod(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}

	// The test binary lives in a root-only build directory: give the child
	// a copy it can execute.
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "client")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(cred *syscall.Credential) int {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+sock)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("run child: %v: %s", err, out)
		}
		return 0
	}
	if code := run(&syscall.Credential{Uid: 65534, Gid: 65534}); code != 3 {
		t.Errorf("uid 65534 client exited %d, want 3 (PERMISSION_DENIED)", code)
	}
	if code := run(nil); code != 0 {
		t.Errorf("root client exited %d, want 0", code)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.prepared) != 0 {
		t.Errorf("handler reached: %v", h.prepared)
	}
}

// A release that asks for no answer gets none, served or refused: the
// next answer on the connection is the next request's.
func TestNoReplyReleaseGetsNoAnswer(t *testing.T) {
	tests := []struct {
		name     string
		id       string
		released []string
	}{
		{"served", "c1", []string{"c1"}},
		{"refused (no container id)", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			h := &fakeHandler{dir: dir}
			sock := filepath.Join(dir, "agent.sock")
			startServer(t, h, sock)
			conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			if err := send(conn, &agent.Request{Op: &agent.Request_Release{Release: &agent.ReleaseRequest{ContainerId: tc.id, NoReply: true}}}, nil); err != nil {
				t.Fatal(err)
			}
			if err := send(conn, &agent.Request{Op: &agent.Request_List{List: &agent.ListRequest{}}}, nil); err != nil {
				t.Fatal(err)
			}
			var resp agent.Response
			if _, err := recv(conn, &resp, nil); err != nil {
				t.Fatal(err)
			}
			if resp.GetList() == nil {
				t.Fatalf("first answer %v, want the list's: the release was answered", &resp)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if !slices.Equal(h.released, tc.released) {
				t.Errorf("released %v, want %v", h.released, tc.released)
			}
		})
	}
}
