package localapi

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/api/agent"
)

// TestPrepareRequestValidation covers what the server refuses before a
// handler sees the request.
func TestPrepareRequestValidation(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	h := &fakeHandler{dir: dir, payload: "x"}
	startServer(t, h, sock)
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	tests := []struct {
		name string
		req  *agent.PrepareRequest
	}{
		// The agent attaching with no pid would attach in its own mount
		// namespace: the host's.
		{"attach without pid", &agent.PrepareRequest{Attach: true, Container: &agent.Container{Id: "c1", Service: "web", Rootfs: "/"}}},
		{"attach with negative pid", &agent.PrepareRequest{Attach: true, Container: &agent.Container{Id: "c1", Service: "web", Pid: -1}}},
		// Before its create a container has no process to attach in or
		// to name.
		{"before create, attach", &agent.PrepareRequest{BeforeCreate: true, Attach: true, Container: &agent.Container{Id: "c1", Service: "web", Pid: 7}}},
		{"before create, a pid", &agent.PrepareRequest{BeforeCreate: true, Container: &agent.Container{Id: "c1", Service: "web", Pid: 7}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, files, err := c.Prepare(ctx, tt.req)
			closeAll(files)
			if !IsCode(err, agent.Error_INVALID) {
				t.Errorf("prepare %v: %v, want INVALID", tt.req, err)
			}
		})
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.prepared) != 0 {
		t.Errorf("handler reached with %v", h.prepared)
	}
}

// TestBindRequestValidation covers the binds the server refuses before a
// handler sees them, and a handler that cannot bind.
func TestBindRequestValidation(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	binder := &bindingHandler{fakeHandler: fakeHandler{dir: dir}}
	for _, tt := range []struct {
		name string
		h    Handler
		req  *agent.BindRequest
		want string
	}{
		{"no id", binder, &agent.BindRequest{Pid: 7}, "container id is empty"},
		{"no pid", binder, &agent.BindRequest{ContainerId: "c1"}, "pid 0 is not a process"},
		{"negative pid", binder, &agent.BindRequest{ContainerId: "c1", Pid: -7}, "pid -7 is not a process"},
		{"a handler that cannot bind", &fakeHandler{dir: dir}, &agent.BindRequest{ContainerId: "c1", Pid: 7}, "cannot hold a container's secrets before the container exists"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "agent.sock")
			startServer(t, tt.h, sock)
			c, err := Dial(sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Bind(ctx, tt.req); !IsCode(err, agent.Error_INVALID) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("bind %v: %v, want INVALID with %q", tt.req, err, tt.want)
			}
		})
	}
	binder.mu.Lock()
	defer binder.mu.Unlock()
	if len(binder.bound) != 0 {
		t.Errorf("handler reached with %v", binder.bound)
	}
	// And a valid one reaches it.
	sock := filepath.Join(t.TempDir(), "agent.sock")
	startServer(t, binder, sock)
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	binder.mu.Unlock()
	err = c.Bind(ctx, &agent.BindRequest{ContainerId: "c1", Pid: 7})
	binder.mu.Lock()
	if err != nil || len(binder.bound) != 1 {
		t.Errorf("bind: %v, handler saw %v", err, binder.bound)
	}
}

// bindingHandler is a fakeHandler that can bind.
type bindingHandler struct {
	fakeHandler
	bound []*agent.BindRequest
}

func (h *bindingHandler) Bind(_ context.Context, req *agent.BindRequest) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bound = append(h.bound, req)
	return nil
}

// fakeAgentEnv makes the test binary listen on a socket as a stand-in
// agent that answers one request (see TestMain).
const fakeAgentEnv = "LOCKBOX_LOCALAPI_TEST_FAKE_AGENT"

// runFakeAgent listens on sock, says "ready" on stdout and answers every
// request of one connection with an empty List: what a process that took
// the agent's socket path could do.
func runFakeAgent(sock string) int {
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		os.Stderr.WriteString("listen: " + err.Error() + "\n")
		return 1
	}
	defer ln.Close()
	os.Stdout.WriteString("ready\n")
	conn, err := ln.AcceptUnix()
	if err != nil {
		return 1
	}
	defer conn.Close()
	for {
		var req agent.Request
		if _, err := recv(conn, &req, nil); err != nil {
			return 0
		}
		if err := send(conn, &agent.Response{Result: &agent.Response_List{List: &agent.ListResponse{}}}, nil); err != nil {
			return 0
		}
	}
}

// TestDialRefusesNonRootAgent: whoever answers on the agent's socket must
// be root. A process of another user that got to listen there (a socket
// directory it can write, a stale path) would otherwise be asked for, and
// trusted with, every container's mounts.
func TestDialRefusesNonRootAgent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root: it runs a listener as uid 65534")
	}
	dir, err := os.MkdirTemp("", "lockbox-fakeagent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "fakeagent")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), fakeAgentEnv+"="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("fake agent: %q %v", line, err)
	}

	c, err := Dial(sock)
	if err == nil {
		defer c.Close()
		_, lerr := c.List(context.Background())
		t.Fatalf("dial of an agent running as uid 65534 succeeded (list: %v)", lerr)
	}
	if !IsCode(err, agent.Error_PERMISSION_DENIED) {
		t.Errorf("dial: %v, want PERMISSION_DENIED", err)
	}
}

// TestListenSocketDirectory: Listen makes a missing directory 0700, and
// never changes the mode of one that exists (an operator's --socket
// /run/agent.sock must not chmod /run); it refuses a directory that another
// user owns or that others may write, where the socket could be replaced.
func TestListenSocketDirectory(t *testing.T) {
	tests := []struct {
		name     string
		mode     os.FileMode // of the existing directory; 0: missing
		uid      int
		wantErr  bool
		wantMode os.FileMode
	}{
		{name: "missing", wantMode: 0o700},
		{name: "root 0700", mode: 0o700, wantMode: 0o700},
		{name: "root 0755 (like /run)", mode: 0o755, wantMode: 0o755},
		{name: "world-writable (like /tmp)", mode: os.ModeSticky | 0o777, wantErr: true, wantMode: os.ModeSticky | 0o777},
		{name: "group-writable", mode: 0o770, wantErr: true, wantMode: 0o770},
		{name: "owned by another user", mode: 0o700, uid: 65534, wantErr: true, wantMode: 0o700},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "run")
			if tt.mode != 0 {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Chown(dir, tt.uid, tt.uid); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(dir, tt.mode); err != nil {
					t.Fatal(err)
				}
			}
			ln, err := Listen(filepath.Join(dir, "agent.sock"))
			if err == nil {
				ln.Close()
			}
			if (err != nil) != tt.wantErr {
				t.Errorf("listen: %v, want error %v", err, tt.wantErr)
			}
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode() & (os.ModePerm | os.ModeSticky); got != tt.wantMode {
				t.Errorf("directory mode %v, want %v", got, tt.wantMode)
			}
		})
	}
}

// TestRefusedCallerCannotHoldConnection: a caller the server refuses gets
// its answer, or the connection closed, even if it never sends a request;
// it cannot park a goroutine and a receive buffer in the agent for good.
func TestRefusedCallerCannotHoldConnection(t *testing.T) {
	old := refusedReadTimeout
	refusedReadTimeout = 50 * time.Millisecond
	t.Cleanup(func() { refusedReadTimeout = old })

	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(&fakeHandler{dir: dir}, nil)
	// This test runs as root: make root the refused caller.
	s.allowUID = 65534
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})

	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Generous: the server must act well before this, on its own.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var resp agent.Response
	_, err = recv(conn, &resp, nil)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server kept a silent refused connection open")
	}
	if err == nil && resp.GetError().GetCode() != agent.Error_PERMISSION_DENIED {
		t.Errorf("answer %v, want PERMISSION_DENIED", &resp)
	}
}

func TestPrepareServiceNameValidation(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	h := &fakeHandler{dir: dir, payload: "x"}
	startServer(t, h, sock)
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct {
		service string
		ok      bool
	}{
		{"web", true},
		{"db-1.prod_x", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{strings.Repeat("a", 65), false},
		{strings.Repeat("a", 100<<10), false},
		{"-web", false},
		{"web\nlevel=ERROR msg=forged", false},
		{"../../etc", false},
		{"web\x00", false},
	}
	for _, tt := range tests {
		_, files, err := c.Prepare(ctx, &agent.PrepareRequest{Container: &agent.Container{Id: "c1", Service: tt.service}})
		closeAll(files)
		if tt.ok && err != nil {
			t.Errorf("service %.20q: %v", tt.service, err)
		}
		if !tt.ok && !IsCode(err, agent.Error_INVALID) {
			t.Errorf("service %.20q: %v, want INVALID", tt.service, err)
		}
		if !tt.ok && err != nil && len(err.Error()) > 300 {
			t.Errorf("service %.20q: error of %d bytes echoes the name", tt.service, len(err.Error()))
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.prepared {
		if s := p.GetContainer().GetService(); s != "web" && s != "db-1.prod_x" && s != strings.Repeat("a", 64) {
			t.Errorf("handler reached with service %.20q", s)
		}
	}
}

// bigHandler answers Prepare with more fds, or a bigger response, than
// one datagram carries.
type bigHandler struct {
	fakeHandler
	files int
	big   bool
}

func (h *bigHandler) Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
	resp := &agent.PrepareResponse{}
	var files []*os.File
	for i := range h.files {
		f, err := os.Open(os.DevNull)
		if err != nil {
			return nil, nil, err
		}
		files = append(files, f)
		resp.Mounts = append(resp.Mounts, &agent.MountPoint{Target: "/x", FdIndex: int32(i)})
	}
	if h.big {
		for range 64 {
			resp.Mounts = append(resp.Mounts, &agent.MountPoint{Target: "/" + strings.Repeat("t", 4000), FdIndex: -1})
		}
	}
	return resp, files, nil
}

// TestReplyTooBig: a reply that cannot be sent (a service with more
// single-file targets than SCM_RIGHTS carries, or targets longer than a
// datagram) reaches the caller as an error, not as a connection dropped
// without a word, and the connection stays usable.
func TestReplyTooBig(t *testing.T) {
	for _, h := range []*bigHandler{{files: maxFDs + 1}, {big: true}} {
		dir := t.TempDir()
		h.dir = dir
		sock := filepath.Join(dir, "agent.sock")
		startServer(t, h, sock)
		c, err := Dial(sock)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, files, err := c.Prepare(ctx, &agent.PrepareRequest{Container: &agent.Container{Id: "c1", Service: "web"}})
		closeAll(files)
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("files %d, big %v: prepare: %v, want the agent's error", h.files, h.big, err)
		} else {
			t.Log(e)
		}
		if _, err := c.List(ctx); err != nil {
			t.Errorf("files %d, big %v: list after it: %v", h.files, h.big, err)
		}
		cancel()
		c.Close()
	}
}
