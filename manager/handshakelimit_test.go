package manager

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
)

// limitedListener serves TLS handshakes through a handshakeLimit of n
// slots; each finished connection is echoed back on.
func limitedListener(t *testing.T, n int) (*handshakeLimit, string, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "m"}, DNSNames: []string{"m"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	h := newHandshakeLimit(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"},
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}), n)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			raw, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer raw.Close()
				conn, _, err := h.ServerHandshake(raw)
				if err != nil {
					return
				}
				defer conn.Close()
				buf := make([]byte, 64)
				for {
					n, err := conn.Read(buf)
					if err != nil {
						return
					}
					conn.Write(buf[:n])
				}
			}()
		}
	}()
	return h, l.Addr().String(), pool
}

// dialDone is a TLS handshake with the listener, reported on a channel.
func dialDone(addr string, pool *x509.CertPool) <-chan error {
	done := make(chan error, 1)
	go func() {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "m", NextProtos: []string{"h2"}})
		if err == nil {
			defer c.Close()
			// Round trip: the server side is past its handshake.
			if _, err = c.Write([]byte("x")); err == nil {
				_, err = c.Read(make([]byte, 1))
			}
		}
		done <- err
	}()
	return done
}

// firstFlightOnly sends a client's first write (its ClientHello) and
// swallows the rest: the server waits for a second flight that never comes.
type firstFlightOnly struct {
	net.Conn
	sent bool
}

func (c *firstFlightOnly) Write(p []byte) (int, error) {
	if c.sent {
		return len(p), nil
	}
	c.sent = true
	return c.Conn.Write(p)
}

// Handshakes under way are served before new ones, each queue in order.
func TestCPUSlotsOrder(t *testing.T) {
	s := &cpuSlots{free: 1}
	s.acquire(false) // the one slot, taken
	order := make(chan string, 4)
	queued := func(name string, underway bool, waiters int) {
		go func() {
			s.acquire(underway)
			order <- name
			s.release()
		}()
		// Wait until it is queued: the queues are the condition.
		for {
			s.mu.Lock()
			n := len(s.cont) + len(s.nw)
			s.mu.Unlock()
			if n == waiters {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	queued("new1", false, 1)
	queued("new2", false, 2)
	queued("underway1", true, 3)
	queued("underway2", true, 4)
	s.release()
	for _, want := range []string{"underway1", "underway2", "new1", "new2"} {
		if got := <-order; got != want {
			t.Fatalf("served %s, want %s", got, want)
		}
	}
	// The last one served gives its slot back.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		free := s.free
		s.mu.Unlock()
		if free == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d slots free after all released, want 1", free)
		}
	}
}

// The limit admits handshakes to the CPU, not connections: clients that
// connect and send nothing, or stop mid-handshake, hold no slot, so with
// a single slot an honest client still gets through; while every slot is
// taken no handshake completes, and one does as soon as a slot is free;
// a finished connection reads without a slot.
func TestHandshakeLimit(t *testing.T) {
	h, addr, pool := limitedListener(t, 1)

	// Silent clients: TCP connected, nothing sent.
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	// A client stalled after its ClientHello: start a handshake by hand
	// and never answer the server's flight.
	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	go tls.Client(&firstFlightOnly{Conn: stalled}, &tls.Config{RootCAs: pool, ServerName: "m"}).Handshake() //nolint:errcheck // only its first flight matters
	if err := <-dialDone(addr, pool); err != nil {
		t.Fatalf("an honest handshake behind silent and stalled clients: %v", err)
	}

	// Every slot taken: no handshake completes until one is given back.
	h.slots.acquire(false)
	done := dialDone(addr, pool)
	select {
	case err := <-done:
		t.Fatalf("a handshake completed with no slot free (err %v)", err)
	case <-time.After(200 * time.Millisecond): // waiting for something that must not happen
	}
	h.slots.release()
	if err := <-done; err != nil {
		t.Fatalf("the handshake waiting for a slot: %v", err)
	}

	// An established connection reads and writes with every slot taken.
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "m", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	h.slots.acquire(false)
	defer h.slots.release()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatalf("an established connection's read waited for a slot: %v", err)
	}
}
