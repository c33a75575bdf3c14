package localapi

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/Microsoft/go-winio"
	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/agent"
)

// pipeHandler records what reaches it and answers from its fields.
type pipeHandler struct {
	mu       sync.Mutex
	prepared []string
	released []string
	err      error
	files    int // files Prepare returns, to test the refusal
}

func (h *pipeHandler) Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return nil, nil, h.err
	}
	h.prepared = append(h.prepared, req.GetContainer().GetId())
	var files []*os.File
	for i := 0; i < h.files; i++ {
		f, err := os.Open(os.Args[0])
		if err != nil {
			return nil, nil, err
		}
		files = append(files, f)
	}
	return &agent.PrepareResponse{Mounts: []*agent.MountPoint{{Target: `C:\ProgramData\Docker\secrets\a`, FdIndex: -1}}}, files, nil
}

func (h *pipeHandler) Release(ctx context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.released = append(h.released, id)
	return h.err
}

func (h *pipeHandler) List(ctx context.Context) (*agent.ListResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var l agent.ListResponse
	for _, id := range h.prepared {
		l.Containers = append(l.Containers, &agent.MountedContainer{Id: id, Service: "web"})
	}
	return &l, h.err
}

type countObserver struct {
	mu  sync.Mutex
	got []string
}

func (o *countObserver) ObserveRequest(op, result string, took time.Duration) {
	o.mu.Lock()
	o.got = append(o.got, op+"/"+result)
	o.mu.Unlock()
}

// startPipe serves h on a pipe of its own and returns the pipe's path.
func startPipe(t *testing.T, h Handler, o Observer) (string, *Server) {
	t.Helper()
	path := fmt.Sprintf(`\\.\pipe\lockbox-test-%d-%d`, os.Getpid(), time.Now().UnixNano())
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(h, nil)
	if o != nil {
		srv.SetObserver(o)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return path, srv
}

func dialPipe(t *testing.T, path string) *Client {
	t.Helper()
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func prepareReq(id string, attach bool) *agent.PrepareRequest {
	return &agent.PrepareRequest{Attach: attach, Container: &agent.Container{Id: id, Service: "web", Rootfs: `C:\root`, Os: "windows"}}
}

func TestPipeRoundTrip(t *testing.T) {
	h := &pipeHandler{}
	o := &countObserver{}
	path, _ := startPipe(t, h, o)
	c := dialPipe(t, path)
	ctx := context.Background()

	resp, files, err := c.Prepare(ctx, prepareReq("c1", true))
	if err != nil {
		t.Fatal(err)
	}
	if files != nil {
		t.Errorf("prepare returned %d files over a pipe", len(files))
	}
	if len(resp.GetMounts()) != 1 || resp.GetMounts()[0].GetTarget() != `C:\ProgramData\Docker\secrets\a` || resp.GetMounts()[0].GetFdIndex() != -1 {
		t.Errorf("prepare response %v", resp)
	}
	l, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.GetContainers()) != 1 || l.GetContainers()[0].GetId() != "c1" {
		t.Errorf("list %v, want c1", l)
	}
	if err := c.Release(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	released := append([]string(nil), h.released...)
	h.mu.Unlock()
	if len(released) != 1 || released[0] != "c1" {
		t.Errorf("released %v, want [c1]", released)
	}
	// The observer runs after the answer is written: ask once more so
	// that the three before are surely counted.
	if _, err := c.List(ctx); err != nil {
		t.Fatal(err)
	}
	o.mu.Lock()
	got := append([]string(nil), o.got...)
	o.mu.Unlock()
	want := []string{"prepare/OK", "list/OK", "release/OK"}
	if len(got) < 3 || fmt.Sprint(got[:3]) != fmt.Sprint(want) {
		t.Errorf("observed %v, want %v first", got, want)
	}
}

func TestPipeRefusals(t *testing.T) {
	tests := []struct {
		name string
		h    *pipeHandler
		call func(*Client) error
		code agent.Error_Code
	}{
		{"prepare without attach", &pipeHandler{}, func(c *Client) error {
			_, _, err := c.Prepare(context.Background(), prepareReq("c1", false))
			return err
		}, agent.Error_INVALID},
		{"prepare without id", &pipeHandler{}, func(c *Client) error {
			_, _, err := c.Prepare(context.Background(), prepareReq("", true))
			return err
		}, agent.Error_INVALID},
		{"release without id", &pipeHandler{}, func(c *Client) error {
			return c.Release(context.Background(), "")
		}, agent.Error_INVALID},
		{"handler error keeps its code", &pipeHandler{err: Errorf(agent.Error_NOT_FOUND, "no grant")}, func(c *Client) error {
			_, _, err := c.Prepare(context.Background(), prepareReq("c1", true))
			return err
		}, agent.Error_NOT_FOUND},
		{"handler files cannot cross a pipe", &pipeHandler{files: 1}, func(c *Client) error {
			_, _, err := c.Prepare(context.Background(), prepareReq("c1", true))
			return err
		}, agent.Error_UNKNOWN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, _ := startPipe(t, tt.h, nil)
			c := dialPipe(t, path)
			err := tt.call(c)
			if !IsCode(err, tt.code) {
				t.Fatalf("got %v, want code %s", err, tt.code)
			}
			if tt.code == agent.Error_INVALID {
				tt.h.mu.Lock()
				n := len(tt.h.prepared) + len(tt.h.released)
				tt.h.mu.Unlock()
				if n != 0 {
					t.Errorf("refused request reached the handler")
				}
			}
			// A refusal leaves the connection usable.
			if _, err := c.List(context.Background()); err != nil && !IsCode(err, tt.code) {
				t.Errorf("list after refusal: %v", err)
			}
		})
	}
}

// TestPipeOversizedMessage: a length over the limit is refused before
// anything is read or allocated, and the server drops the connection.
func TestPipeOversizedMessage(t *testing.T) {
	path, _ := startPipe(t, &pipeHandler{}, nil)
	timeout := 5 * time.Second
	conn, err := winio.DialPipe(path, &timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var hdr [lenSize]byte
	binary.LittleEndian.PutUint32(hdr[:], MaxMessageSize+1)
	if _, err := conn.Write(hdr[:]); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if n, err := conn.Read(b[:]); err == nil {
		t.Fatalf("server answered %d bytes to an oversized message", n)
	} else if errors.Is(err, winio.ErrTimeout) {
		t.Fatal("server kept the connection of an oversized message open")
	}
}

// TestPipeConcurrentClients: each connection is served on its own.
func TestPipeConcurrentClients(t *testing.T) {
	path, _ := startPipe(t, &pipeHandler{}, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		c := dialPipe(t, path)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if _, _, err := c.Prepare(context.Background(), prepareReq(fmt.Sprintf("c%d-%d", i, j), true)); err != nil {
					errs <- err
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestPipeCloseEndsConnections: Close returns with a client still
// connected, and the client then fails instead of hanging.
func TestPipeCloseEndsConnections(t *testing.T) {
	path, srv := startPipe(t, &pipeHandler{}, nil)
	c := dialPipe(t, path)
	if _, err := c.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.List(ctx); err == nil {
		t.Fatal("list answered after Close")
	} else if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("client hung after the server closed")
	}
	if _, err := Dial(path); err == nil {
		t.Fatal("dial succeeded after Close")
	}
}

func TestListenTwiceFails(t *testing.T) {
	path, _ := startPipe(t, &pipeHandler{}, nil)
	if ln, err := Listen(path); err == nil {
		ln.Close()
		t.Fatal("a second listener took the agent's pipe name")
	}
}

func FuzzReadMsg(f *testing.F) {
	good, _ := proto.Marshal(&agent.Request{Op: &agent.Request_Prepare{Prepare: prepareReq("c1", true)}})
	frame := func(b []byte) []byte {
		out := binary.LittleEndian.AppendUint32(nil, uint32(len(b)))
		return append(out, b...)
	}
	f.Add(frame(good))
	f.Add(frame(nil))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add(frame(good)[:5])
	f.Fuzz(func(t *testing.T, b []byte) {
		var req agent.Request
		err := readMsg(bytes.NewReader(b), &req)
		if err != nil {
			return
		}
		n := binary.LittleEndian.Uint32(b)
		if n > MaxMessageSize || int(n)+lenSize > len(b) {
			t.Fatalf("accepted a frame of %d bytes from %d", n, len(b))
		}
		var want agent.Request
		if proto.Unmarshal(b[lenSize:lenSize+int(n)], &want) != nil || !proto.Equal(&req, &want) {
			t.Fatal("decoded something other than the frame's message")
		}
	})
}

// A message's buffer is its own size: reading small requests, one after
// another as a connection does, does not allocate the limit's 128 KiB each
// time (it did, once per connection, before).
func TestReadMsgSizesItsBuffer(t *testing.T) {
	req, _ := proto.Marshal(&agent.Request{Op: &agent.Request_Prepare{Prepare: prepareReq("c1", true)}})
	frame := binary.LittleEndian.AppendUint32(nil, uint32(len(req)))
	frame = append(frame, req...)
	const reads = 100
	stream := bytes.Repeat(frame, reads)
	r := bytes.NewReader(stream)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range reads {
		var m agent.Request
		if err := readMsg(r, &m); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	per := (after.TotalAlloc - before.TotalAlloc) / reads
	t.Logf("%d bytes allocated per %d-byte message", per, len(req))
	if per >= MaxMessageSize/2 {
		t.Fatalf("%d bytes allocated per read of a %d-byte message: a buffer of the limit's size each time", per, len(req))
	}
}

// A release that asks for no answer gets none, served or refused: the
// next answer on the pipe is the next request's.
func TestPipeNoReplyReleaseGetsNoAnswer(t *testing.T) {
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
			h := &pipeHandler{}
			path, _ := startPipe(t, h, nil)
			timeout := 5 * time.Second
			conn, err := winio.DialPipe(path, &timeout)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			if err := writeMsg(conn, &agent.Request{Op: &agent.Request_Release{Release: &agent.ReleaseRequest{ContainerId: tc.id, NoReply: true}}}); err != nil {
				t.Fatal(err)
			}
			if err := writeMsg(conn, &agent.Request{Op: &agent.Request_List{List: &agent.ListRequest{}}}); err != nil {
				t.Fatal(err)
			}
			var resp agent.Response
			if err := readMsg(conn, &resp); err != nil {
				t.Fatal(err)
			}
			if resp.GetList() == nil {
				t.Fatalf("first answer %v, want the list's: the release was answered", &resp)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if fmt.Sprint(h.released) != fmt.Sprint(tc.released) {
				t.Errorf("released %v, want %v", h.released, tc.released)
			}
		})
	}
}
