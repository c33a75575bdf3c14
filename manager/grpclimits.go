package manager

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"google.golang.org/grpc/credentials"

	"github.com/lockbox-project/lockbox/manager/admin"
)

// The gRPC servers' limits, in one place.
const (
	// maxRecvMsgSize is the largest request a manager reads: the biggest
	// one is CreateSecret, a secret's data (below admin.MaxSecretSize)
	// plus its spec, labels and protobuf framing, for which 64 KiB is
	// ample. Anything larger is refused with ResourceExhausted before it
	// is decoded.
	maxRecvMsgSize = admin.MaxSecretSize + 64<<10
	// maxConcurrentStreams bounds the streams of one connection: an agent
	// holds one session and a few unary calls; an admin client a few
	// calls.
	maxConcurrentStreams = 64

	// Per-connection buffers: a manager holds one connection per agent,
	// thousands of them mostly idle, so what each keeps between messages
	// is what a manager's memory grows by per agent (docs/performance.md).
	//
	// writeBufferSize batches a connection's frames into TLS records. gRPC
	// takes it from a pool for each write and gives it back once flushed
	// (its shared write buffer), so idle connections hold none.
	writeBufferSize = 16 << 10
	// readBufferSize is 0: no bufio.Reader between HTTP/2 and TLS. TLS
	// already keeps each decrypted record in memory and hands it out in
	// whatever pieces the HTTP/2 framer asks for, so a second buffer
	// saved no system calls, only cost 4 KiB per connection, held for
	// the connection's life. (Measured: docs/performance.md.)
	readBufferSize = 0
)

// handshakeSlots bounds the TLS handshakes a manager computes at once:
// twice its cores, and at least four.
func handshakeSlots() int { return max(4, 2*runtime.GOMAXPROCS(0)) }

// handshakeLimit admits TLS handshakes to the CPU a few at a time.
//
// Why: after a manager restart every agent reconnects at once. Run all
// together, thousands of handshakes share the cores and each takes as long
// as the whole burst; past the clients' connect deadline (20 s in gRPC)
// they all fail, their CPU wasted, and are dialled again: the storm
// collapses instead of converging (docs/performance.md, "Reconnect
// storm"). Admitted a few at a time, handshakes finish in the order the
// connections arrived, and every one the manager computes is one an agent
// gets.
//
// A slot is held only while a handshake computes: it is given back
// whenever the handshake waits to read from its client, so a client that
// connects and sends nothing, or stalls mid-handshake, holds no slot and
// delays nobody. A handshake coming back with its client's answer goes
// before handshakes not yet started: otherwise every handshake's second
// half would queue behind every first half, and all would end together
// at the end of the burst. Once the handshake is done the connection
// reads straight through. Nothing about the TLS configuration changes.
type handshakeLimit struct {
	credentials.TransportCredentials
	slots *cpuSlots
}

func newHandshakeLimit(c credentials.TransportCredentials, slots int) *handshakeLimit {
	return &handshakeLimit{TransportCredentials: c, slots: &cpuSlots{free: slots}}
}

// ServerHandshake runs the wrapped handshake with the connection's reads
// giving back its slot.
func (h *handshakeLimit) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	// The first read (the ClientHello) takes the slot.
	c := &slotConn{Conn: raw, slots: h.slots}
	conn, info, err := h.TransportCredentials.ServerHandshake(c)
	c.finish()
	return conn, info, err
}

// Clone keeps the limit (shared slots) around a clone of the credentials.
func (h *handshakeLimit) Clone() credentials.TransportCredentials {
	return &handshakeLimit{TransportCredentials: h.TransportCredentials.Clone(), slots: h.slots}
}

// cpuSlots is a counting semaphore with two queues, each first come first
// served: a waiter of the first (handshakes under way) is always served
// before any of the second (new ones).
type cpuSlots struct {
	mu       sync.Mutex
	free     int
	cont, nw []chan struct{}
}

func (s *cpuSlots) acquire(underway bool) {
	s.mu.Lock()
	if s.free > 0 && len(s.cont) == 0 && (underway || len(s.nw) == 0) {
		s.free--
		s.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	if underway {
		s.cont = append(s.cont, ch)
	} else {
		s.nw = append(s.nw, ch)
	}
	s.mu.Unlock()
	<-ch // the slot is handed over by release
}

func (s *cpuSlots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range []*[]chan struct{}{&s.cont, &s.nw} {
		if len(*q) > 0 {
			ch := (*q)[0]
			(*q)[0] = nil
			*q = (*q)[1:]
			close(ch)
			return
		}
	}
	s.free++
}

// slotConn is a connection whose handshake holds a slot while it computes.
// Only the handshake's goroutine reads it until finish; after that, reads
// pass through (done), from whichever goroutine.
type slotConn struct {
	net.Conn
	slots *cpuSlots
	// Used by the handshake's goroutine only.
	held, underway bool
	done           atomic.Bool
}

func (c *slotConn) release() {
	if c.held {
		c.slots.release()
		c.held = false
	}
}

// finish ends the handshake: the slot is given back for good.
func (c *slotConn) finish() {
	c.release()
	c.done.Store(true)
}

func (c *slotConn) Read(p []byte) (int, error) {
	if c.done.Load() {
		return c.Conn.Read(p)
	}
	c.release()
	n, err := c.Conn.Read(p)
	c.slots.acquire(c.underway)
	c.held, c.underway = true, true
	return n, err
}

// SyscallConn keeps the raw socket reachable (gRPC's channelz and socket
// options look for it), as the unwrapped connection would.
func (c *slotConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("not a socket")
	}
	return sc.SyscallConn()
}
