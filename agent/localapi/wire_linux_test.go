package localapi

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/api/agent"
)

// TestRecvClearsBuffer: a receive buffer is reused (across requests on a
// connection, across connections through recvBufs), so recv must leave
// nothing of a request in it once decoded.
func TestRecvClearsBuffer(t *testing.T) {
	pair := socketPair(t)
	id := strings.Repeat("container-id-", 4)
	if err := send(pair[0], &agent.Request{Op: &agent.Request_Release{Release: &agent.ReleaseRequest{ContainerId: id}}}, []*os.File{os.Stdin}); err != nil {
		t.Fatal(err)
	}
	rb := newRecvBuf()
	var req agent.Request
	files, err := recv(pair[1], &req, rb)
	if err != nil {
		t.Fatal(err)
	}
	closeAll(files)
	if got := req.GetRelease().GetContainerId(); got != id {
		t.Fatalf("decoded container id %q, want %q", got, id)
	}
	for i, b := range rb.data {
		if b != 0 {
			t.Fatalf("data[%d] = %#x after recv: the request stays in the reused buffer", i, b)
		}
	}
	for i, b := range rb.oob {
		if b != 0 {
			t.Fatalf("oob[%d] = %#x after recv: the control message stays in the reused buffer", i, b)
		}
	}
}

// TestServerReusesReceiveBuffers: a connection must not cost the agent a
// fresh 128 KiB buffer. A shim dials twice per claiming container, and
// those buffers were 95% of all the agent allocated, the garbage
// collector's work with them (docs/performance.md).
func TestServerReusesReceiveBuffers(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	s := startServer(t, &fakeHandler{dir: dir}, sock)
	client := newRecvBuf() // the test's own, allocated before counting
	roundTrip := func() {
		conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if err := send(conn, &agent.Request{Op: &agent.Request_List{List: &agent.ListRequest{}}}, nil); err != nil {
			t.Fatal(err)
		}
		var resp agent.Response
		if _, err := recv(conn, &resp, client); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		// The server returns the buffer before it forgets the connection.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			s.conns.mu.Lock()
			n := len(s.conns.open)
			s.conns.mu.Unlock()
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the server did not finish the connection")
			}
		}
	}
	roundTrip()
	const conns = 200
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range conns {
		roundTrip()
	}
	runtime.ReadMemStats(&after)
	// A garbage collection empties the pool, and under the race detector
	// a Put drops a quarter of what it is given, so some fresh buffers are
	// allocated (about 5 KB a connection on average here, 45 KB with
	// -race); one per connection (over 128 KiB) is what this guards
	// against.
	per := (after.TotalAlloc - before.TotalAlloc) / conns
	if per >= MaxMessageSize/2 {
		t.Errorf("a connection allocated %d bytes on average; a fresh receive buffer is %d", per, MaxMessageSize)
	}
	t.Logf("%d bytes allocated per connection (test client included)", per)
}

// socketPair returns two connected SOCK_SEQPACKET unix connections.
func socketPair(t *testing.T) [2]*net.UnixConn {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var pair [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "seqpacket")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		pair[i] = c.(*net.UnixConn)
		t.Cleanup(func() { c.Close() })
	}
	return pair
}
