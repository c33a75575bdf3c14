//go:build linux

package agentconn

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/agent/localapi"
	"github.com/lockbox-project/lockbox/api/agent"
)

// handler is a scripted agent behind the real local API server.
type handler struct {
	mu       sync.Mutex
	prepared []*agent.PrepareRequest
	released []string
	targeted []*agent.TargetsRequest
	// prepare answers a Prepare; nil answers one attached mount.
	prepare func(*agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error)
	// block, when set, holds every request until it is closed.
	block chan struct{}
}

func (h *handler) Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
	if h.block != nil {
		<-h.block
	}
	h.mu.Lock()
	h.prepared = append(h.prepared, req)
	h.mu.Unlock()
	if h.prepare != nil {
		return h.prepare(req)
	}
	return &agent.PrepareResponse{Mounts: []*agent.MountPoint{{Target: "/run/secrets", FdIndex: -1}}}, nil, nil
}

func (h *handler) Release(ctx context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.released = append(h.released, id)
	return nil
}

func (h *handler) List(ctx context.Context) (*agent.ListResponse, error) {
	return &agent.ListResponse{}, nil
}

func (h *handler) Targets(ctx context.Context, req *agent.TargetsRequest) (*agent.TargetsResponse, error) {
	h.mu.Lock()
	h.targeted = append(h.targeted, req)
	h.mu.Unlock()
	if req.GetContainer().GetService() != "web" {
		return nil, localapi.Errorf(agent.Error_NOT_GRANTED, "service %q is not granted to this node", req.GetContainer().GetService())
	}
	return &agent.TargetsResponse{Targets: []string{"/run/secrets/db_pw", "/etc/app/cert.pem"}}, nil
}

func serve(t *testing.T, h *handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "run", "agent.sock")
	ln, err := localapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := localapi.NewServer(h, nil)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if h.block != nil {
			select {
			case <-h.block:
			default:
				close(h.block)
			}
		}
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return sock
}

func TestPrepareAndReleaseWithTheRealServer(t *testing.T) {
	h := &handler{}
	c, err := Dial(serve(t, h), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctr := &Container{ID: "c1", Service: "web", Pid: 4242, Rootfs: "/", OS: "linux", ReadonlyRootfs: true,
		UIDMappings: []IDMapping{{0, 100000, 65536}}}
	mounts, files, err := c.Prepare(ctr, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 0 || len(mounts) != 1 || mounts[0] != (Mount{"/run/secrets", -1}) {
		t.Fatalf("mounts %+v, %d files", mounts, len(files))
	}
	if err := c.Release("c1", Process{}); err != nil {
		t.Fatal(err)
	}
	want := &agent.PrepareRequest{Attach: true, Container: &agent.Container{Id: "c1", Service: "web", Pid: 4242, Rootfs: "/", Os: "linux",
		ReadonlyRootfs: true, UidMappings: []*agent.IDMapping{{ContainerId: 0, HostId: 100000, Size: 65536}}}}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.prepared) != 1 || !proto.Equal(h.prepared[0], want) {
		t.Fatalf("agent got %v, want %v", h.prepared, want)
	}
	if len(h.released) != 1 || h.released[0] != "c1" {
		t.Fatalf("released %q", h.released)
	}
}

func TestTargetsWithTheRealServer(t *testing.T) {
	h := &handler{}
	c, err := Dial(serve(t, h), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctr := &Container{ID: "c1", Service: "web", OS: "linux", ReadonlyRootfs: true, UIDMappings: []IDMapping{{0, 100000, 65536}}}
	ts, err := c.Targets(ctr)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[0] != "/run/secrets/db_pw" || ts[1] != "/etc/app/cert.pem" {
		t.Fatalf("targets %q", ts)
	}
	want := &agent.TargetsRequest{Container: &agent.Container{Id: "c1", Service: "web", Os: "linux", ReadonlyRootfs: true,
		UidMappings: []*agent.IDMapping{{ContainerId: 0, HostId: 100000, Size: 65536}}}}
	h.mu.Lock()
	got := h.targeted
	h.mu.Unlock()
	if len(got) != 1 || !proto.Equal(got[0], want) {
		t.Fatalf("agent got %v, want %v", got, want)
	}
	_, err = c.Targets(&Container{ID: "c2", Service: "db", OS: "linux"})
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != NotGranted {
		t.Fatalf("targets of a service not granted: %v, want NOT_GRANTED", err)
	}
}

// Without attach the agent hands the mounts over as fds: they must arrive
// open, in order, and be the caller's.
func TestPrepareReceivesFiles(t *testing.T) {
	dir := t.TempDir()
	h := &handler{prepare: func(*agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
		var files []*os.File
		resp := &agent.PrepareResponse{}
		for i, name := range []string{"a", "b"} {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, []byte(name), 0o600); err != nil {
				return nil, nil, err
			}
			f, err := os.Open(p)
			if err != nil {
				return nil, nil, err
			}
			files = append(files, f)
			resp.Mounts = append(resp.Mounts, &agent.MountPoint{Target: "/run/secrets/" + name, FdIndex: int32(i)})
		}
		return resp, files, nil
	}}
	c, err := Dial(serve(t, h), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mounts, files, err := c.Prepare(&Container{ID: "c1", Service: "web", Pid: 1}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(files)
	if len(mounts) != 2 || len(files) != 2 {
		t.Fatalf("mounts %+v, %d files", mounts, len(files))
	}
	for _, m := range mounts {
		b, err := io.ReadAll(files[m.FdIndex])
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.TrimPrefix(m.Target, "/run/secrets/"); string(b) != want {
			t.Errorf("mount %s: fd %d reads %q, want %q", m.Target, m.FdIndex, b, want)
		}
	}
}

func TestAgentErrorKeepsItsCode(t *testing.T) {
	h := &handler{prepare: func(req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
		return nil, nil, localapi.Errorf(agent.Error_NOT_GRANTED, "service %q is not granted to this node", req.GetContainer().GetService())
	}}
	c, err := Dial(serve(t, h), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _, err = c.Prepare(&Container{ID: "c1", Service: "db", Pid: 1}, true)
	var e *Error
	if !errors.As(err, &e) || e.Code != NotGranted {
		t.Fatalf("err = %v, want a NOT_GRANTED *Error", err)
	}
	// The same text the localapi client shows.
	if want := localapi.Errorf(agent.Error_NOT_GRANTED, `service "db" is not granted to this node`).Error(); err.Error() != want {
		t.Fatalf("err = %q, want %q", err, want)
	}
	// An agent error is an answer: the connection stays usable.
	if err := c.Release("c1", Process{}); err != nil {
		t.Fatal(err)
	}
}

func TestTimeoutBreaksTheConnection(t *testing.T) {
	h := &handler{block: make(chan struct{})}
	c, err := Dial(serve(t, h), 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _, err = c.Prepare(&Container{ID: "c1", Service: "web", Pid: 1}, true)
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("err = %v, want a timeout", err)
	}
	close(h.block)
	// The late answer must never be read as the answer to the next request.
	if err := c.Release("c1", Process{}); err == nil || !strings.Contains(err.Error(), "unusable") {
		t.Fatalf("release after a timeout: %v", err)
	}
}

func TestDialErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Dial(filepath.Join(dir, "missing.sock"), time.Second); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing socket: %v", err)
	}
	// A regular file where the socket should be.
	p := filepath.Join(dir, "file")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Dial(p, time.Second); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("not a socket: %v", err)
	}
}

// A request larger than one datagram is refused before it is sent, and
// the connection stays usable.
func TestOversizedRequestIsRefused(t *testing.T) {
	h := &handler{}
	c, err := Dial(serve(t, h), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := &Container{ID: "c1", Service: strings.Repeat("s", maxMessage)}
	if _, _, err := c.Prepare(big, true); err == nil || !strings.Contains(err.Error(), "larger than a datagram") {
		t.Fatalf("oversized request: %v", err)
	}
	if err := c.Release("c1", Process{}); err != nil {
		t.Fatal(err)
	}
	if len(h.prepared) != 0 {
		t.Fatal("the agent saw the oversized request")
	}
}

// TestWaitingHoldsNoThread: callers waiting for the agent's answers park
// in the Go runtime's netpoller; blocked in recvmsg, each would hold an OS
// thread, which a runtime shim (a fresh process a container) has to start.
func TestWaitingHoldsNoThread(t *testing.T) {
	const n = 20
	h := &handler{block: make(chan struct{})}
	sock := serve(t, h)
	threads := func() int {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	// The server's side waits in the netpoller too (agent/localapi); its
	// blocked handlers are goroutines, not threads.
	before := threads()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		c, err := Dial(sock, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := c.Prepare(&Container{ID: "c1", Service: "web", Pid: 1}, true)
			errs <- err
		}()
	}
	time.Sleep(300 * time.Millisecond)
	during := threads()
	close(h.block)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Blocked in recvmsg, n waiting callers took n threads (checked
	// against the build before the netpoller).
	if during-before >= n/2 {
		t.Errorf("%d threads while %d callers wait for the agent, %d before", during, n, before)
	}
	t.Logf("%d threads while %d callers waited, %d before", during, n, before)
}

// TestAgentGoneMidRequest: an agent that closes the connection under a
// request (it was killed or restarted) is named as such, whether the
// caller was waiting for the answer or writing the next request.
func TestAgentGoneMidRequest(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			// Read the request, then die without an answer.
			buf := make([]byte, maxMessage)
			conn.Read(buf)
			conn.Close()
		}
	}()
	c, err := Dial(sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _, err = c.PrepareBeforeCreate(&Container{ID: "c1", Service: "web"})
	if err == nil || !strings.Contains(err.Error(), "the agent closed the connection") {
		t.Fatalf("prepare with the agent gone: %v, want it named", err)
	}

	c2, err := Dial(sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.SendBind("c1", 1); err != nil {
		t.Fatal(err)
	}
	// The agent has read the Bind and closed: the next write finds it gone.
	waitGone := time.Now().Add(5 * time.Second)
	for {
		err = c2.send(encodeBind("c1", 1))
		if err != nil || time.Now().After(waitGone) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err == nil || !strings.Contains(err.Error(), "the agent closed the connection") || !(errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET)) {
		t.Fatalf("send with the agent gone: %v, want it named, with its errno", err)
	}
}

// TestResponsesOfEverySize: the receive buffer starts small (firstBuf) and
// grows to the answer's length, which a peek learns before the answer is
// read; the fds come with the read, not the peek (none leaks), and an
// answer longer than the largest datagram still fails as truncated.
func TestResponsesOfEverySize(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secret")
	if err := os.WriteFile(p, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	// mounts makes the answer n bytes long or a little more: each mount
	// has a target of its own, and all but the last share one fd.
	var mounts atomic.Int64
	h := &handler{prepare: func(*agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
		resp := &agent.PrepareResponse{}
		for i := 0; i < int(mounts.Load()); i++ {
			resp.Mounts = append(resp.Mounts, &agent.MountPoint{Target: "/run/secrets/" + strings.Repeat("t", 80) + string(rune('a'+i%26)), FdIndex: 0})
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, nil, err
		}
		return resp, []*os.File{f}, nil
	}}
	sock := serve(t, h)
	c, err := Dial(sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// open counts this process's fds on the secret's file: the test's are
	// closed once read, the server's once sent (by its goroutine, maybe
	// after the answer is read: open waits up to 5 s for them).
	open := func() int {
		es, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range es {
			if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); l == p {
				n++
			}
		}
		return n
	}

	// One mount is about 100 bytes: under firstBuf, over it (the buffer
	// grows), under the grown buffer (it is kept), and at about 100 KiB.
	for _, n := range []int{1, 60, 30, 1000} {
		mounts.Store(int64(n))
		ms, files, err := c.PrepareBeforeCreate(&Container{ID: "c1", Service: "web"})
		if err != nil {
			t.Fatalf("%d mounts: %v", n, err)
		}
		if len(ms) != n || len(files) != 1 {
			t.Fatalf("%d mounts: got %d mounts and %d files", n, len(ms), len(files))
		}
		b, err := io.ReadAll(files[0])
		closeAll(files)
		if err != nil || string(b) != "s3cret" {
			t.Fatalf("%d mounts: the fd reads %q, %v", n, b, err)
		}
		if n == 60 && len(c.buf) <= firstBuf {
			t.Errorf("a %d-mount answer left the buffer at %d bytes", n, len(c.buf))
		}
	}
	n := open()
	for wait := time.Now().Add(5 * time.Second); n != 0 && time.Now().Before(wait); n = open() {
		time.Sleep(10 * time.Millisecond)
	}
	if n != 0 {
		t.Errorf("%d fds on the secret's file still open: the peek installed some", n)
	}
	// Over a datagram: the server cannot send it, and says so; the
	// connection is not left with half an answer.
	mounts.Store(1400)
	if _, _, err := c.PrepareBeforeCreate(&Container{ID: "c1", Service: "web"}); err == nil {
		t.Fatal("an answer over the largest datagram was read")
	}
}
