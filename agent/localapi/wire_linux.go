package localapi

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/internal/agentsocket"
)

const (
	// MaxMessageSize bounds one datagram. A SOCK_SEQPACKET message must fit
	// in the socket send buffer (about 208 KiB by default), so responses are
	// kept well below that.
	MaxMessageSize = 128 << 10
	// maxFDs is the kernel's limit on fds in one SCM_RIGHTS message
	// (SCM_MAX_FD).
	maxFDs = 253
)

// DefaultSocket is where the agent listens unless told otherwise.
const DefaultSocket = agentsocket.Default

var errTruncated = errors.New("message larger than the datagram limit")

// errTooManyFDs is a message with more fds than one datagram carries.
var errTooManyFDs = fmt.Errorf("more than %d fds", maxFDs)

// errEOF is a zero-length read: on SOCK_SEQPACKET, the peer has closed.
var errEOF = io.EOF

// send marshals m into one datagram with files in SCM_RIGHTS.
func send(c *net.UnixConn, m proto.Message, files []*os.File) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal: %w", err)
	}
	if len(b) > MaxMessageSize {
		return fmt.Errorf("send %d bytes: %w", len(b), errTruncated)
	}
	if len(files) > maxFDs {
		return fmt.Errorf("send %d fds: %w", len(files), errTooManyFDs)
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	// Requests and responses always set a oneof or the error, so they never
	// marshal to zero bytes: a zero-length datagram would read as EOF.
	n, oobn, err := c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if n != len(b) || oobn != len(oob) {
		return fmt.Errorf("send: short write %d/%d", n, len(b))
	}
	return nil
}

// recvBuf is one connection's receive buffers, reused for every datagram
// (the protocol is one request at a time per connection).
type recvBuf struct {
	data []byte
	oob  []byte
}

func newRecvBuf() *recvBuf {
	return &recvBuf{data: make([]byte, MaxMessageSize+1), oob: make([]byte, unix.CmsgSpace(maxFDs*4))}
}

// recvBufs recycles the server's receive buffers across connections. A
// shim dials the agent twice per claiming container (Prepare, Release),
// and a fresh 128 KiB buffer per connection was 95% of all the agent
// allocated (290 KB of about 305 KB per container): the garbage collector
// ran every few containers, a large share of the agent's CPU time in the
// shim benchmark (docs/performance.md). recv clears what a request wrote
// before a buffer goes back.
var recvBufs = sync.Pool{New: func() any { return newRecvBuf() }}

// getRecvBuf takes a receive buffer from the pool; putRecvBuf returns it.
func getRecvBuf() *recvBuf   { return recvBufs.Get().(*recvBuf) }
func putRecvBuf(rb *recvBuf) { recvBufs.Put(rb) }

// recv reads one datagram into m and returns the files that came with it.
// The caller owns the files. rb may be nil for a one-off read.
func recv(c *net.UnixConn, m proto.Message, rb *recvBuf) ([]*os.File, error) {
	if rb == nil {
		rb = newRecvBuf()
	}
	buf, oob := rb.data, rb.oob
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	// Nothing of a request outlives its decoding in a buffer that is
	// reused (proto.Unmarshal copies what it keeps).
	defer clear(buf[:min(n, len(buf))])
	defer clear(oob[:oobn])
	files, ferr := parseRights(oob[:oobn])
	if ferr != nil {
		closeAll(files)
		return nil, ferr
	}
	if n == 0 && oobn == 0 {
		// A zero-length read on SOCK_SEQPACKET is the peer closing.
		return nil, errEOF
	}
	if n > MaxMessageSize || flags&unix.MSG_TRUNC != 0 {
		closeAll(files)
		return nil, errTruncated
	}
	if flags&unix.MSG_CTRUNC != 0 {
		closeAll(files)
		return nil, errors.New("control message truncated: fds lost")
	}
	if err := proto.Unmarshal(buf[:n], m); err != nil {
		closeAll(files)
		return nil, fmt.Errorf("unmarshal: %w", err)
	}
	return files, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var files []*os.File
	for i := range msgs {
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "lockbox-mount"))
		}
	}
	return files, nil
}
