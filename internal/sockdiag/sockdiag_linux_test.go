package sockdiag

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestDestroyAccepted: the connections a listener accepted are closed
// (their clients see the reset); a connection accepted by another
// listener with the same port on another address, and the listener
// itself, are left alone.
func TestDestroyAccepted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SOCK_DESTROY needs CAP_NET_ADMIN")
	}
	target := listen(t, "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(target.Addr().String())
	other := listen(t, net.JoinHostPort("127.0.0.2", port)) // same port, another address

	var clients []net.Conn
	for range 2 {
		clients = append(clients, dial(t, target))
	}
	bystander := dial(t, other)

	n, err := DestroyAccepted(netip.MustParseAddrPort(target.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("closed %d connections, want 2", n)
	}
	for i, c := range clients {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("client %d: read %v, want the connection closed", i, err)
		}
	}
	// The bystander still talks.
	if _, err := bystander.Write([]byte("x")); err != nil {
		t.Fatalf("bystander: %v", err)
	}
	// The listener still accepts.
	c := dial(t, target)
	if _, err := c.Write([]byte("y")); err != nil {
		t.Fatalf("new connection after the drop: %v", err)
	}
	if n, err := DestroyAccepted(netip.MustParseAddrPort("127.0.0.3:" + strconv.Itoa(1))); err != nil || n != 0 {
		t.Fatalf("no such connections: %d, %v", n, err)
	}
}

// listen accepts connections on addr, keeps each open and reads it (so a
// client's write succeeds); all are closed when the test ends.
func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go io.Copy(io.Discard, c)
		}
	}()
	return l
}

// dial connects to l. The kernel has the connection established from the
// handshake on, accepted by the program or not: the dump sees it.
func dial(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
