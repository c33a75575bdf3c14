//go:build linux

package agentconn

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// maxMessage is agent/localapi's MaxMessageSize: one datagram.
	maxMessage = 128 << 10
	// maxFDs is the kernel's limit of fds in one SCM_RIGHTS message.
	maxFDs = 253
)

// Conn is one connection to the agent. Requests are served one at a time;
// a Conn is not safe for concurrent use.
type Conn struct {
	// f owns the socket once it is connected, non-blocking, and rc waits
	// on it in the Go runtime's netpoller: a goroutine waiting for the
	// agent's answer parks rather than hold a thread in recvmsg, which a
	// runtime shim (a fresh process for each container) had to start one
	// for while runc's create held another (docs/performance.md).
	f  *os.File
	rc syscall.RawConn
	// timeout bounds each call (zero: none).
	timeout time.Duration
	// broken is set once a request failed mid-way: a late response could
	// otherwise be read as the answer to the next request.
	broken error
	// Received, if set, is called as soon as a response has been read,
	// before it is decoded (the shim's phase trace).
	Received func()
	// buf and oob receive the responses: allocated at the first, reused
	// by the next (the shim makes two or three round trips a claim, and a
	// response never carries a secret). buf grows to the largest response
	// read (receive), from firstBuf.
	buf, oob []byte
}

// firstBuf is the receive buffer a connection starts with: larger than
// any answer to a claim of a few dozen secrets. A buffer of a whole
// datagram (maxMessage, 128 KiB) was most of what a claim allocated in a
// runtime shim, a fresh process that collects its garbage at GOGC 40
// (containerd's pkg/shim): it brought the shim's next collection forward
// into the container's exit (docs/performance.md).
const firstBuf = 4 << 10

// Dial connects to the agent's socket. Every later call on the
// connection fails after timeout (zero: no limit).
func Dial(socket string, timeout time.Duration) (*Conn, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dial agent at %s: %w", socket, err)
	}
	if err := dial(fd, socket, timeout); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Non-blocking from here on: os.NewFile hands it to the netpoller.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("dial agent at %s: %w", socket, err)
	}
	f := os.NewFile(uintptr(fd), "lockbox-agent")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("dial agent at %s: %w", socket, err)
	}
	return &Conn{f: f, rc: rc, timeout: timeout}, nil
}

// dial connects fd, still blocking (a connect to a listener whose backlog
// is full waits, for timeout at most, rather than fail), and checks who
// answers.
func dial(fd int, socket string, timeout time.Duration) error {
	if timeout > 0 {
		tv := unix.NsecToTimeval(timeout.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
			return fmt.Errorf("dial agent at %s: set timeout: %w", socket, err)
		}
	}
	if err := retry(func() error { return unix.Connect(fd, &unix.SockaddrUnix{Name: socket}) }); err != nil {
		return fmt.Errorf("dial agent at %s: %w", socket, &os.SyscallError{Syscall: "connect", Err: callErr(err)})
	}
	// The agent is root: a process of another user answering here (one
	// that could write the socket's directory) would be handed every
	// container's claim and could hand back mounts of its choosing.
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return fmt.Errorf("dial agent at %s: peer credentials: %w", socket, err)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return &Error{Code: PermissionDenied, Message: fmt.Sprintf("the process listening on %s (pid %d) runs as uid %d, not root: it is not the agent", socket, cred.Pid, cred.Uid)}
	}
	return nil
}

// retry repeats a call a signal interrupted.
func retry(fn func() error) error {
	for {
		if err := fn(); err != unix.EINTR {
			return err
		}
	}
}

// Close closes the connection. Files returned by Prepare stay open.
func (c *Conn) Close() error {
	return c.f.Close()
}

// deadline starts the timeout of one call.
func (c *Conn) deadline() {
	if c.timeout > 0 {
		c.f.SetDeadline(time.Now().Add(c.timeout))
	}
}

// Prepare asks the agent to build the container's secrets mount, and with
// attach to attach it into the mount namespace of ctr.Pid itself. Without
// attach the returned mounts name, by FdIndex, the returned files, which
// the caller owns and must close.
func (c *Conn) Prepare(ctr *Container, attach bool) ([]Mount, []*os.File, error) {
	return c.prepare(encodePrepare(ctr, attach, false))
}

// PrepareBeforeCreate asks the agent to build the secrets of ctr, a
// container the runtime has not created yet (no pid), and hand them over:
// every returned mount names, by FdIndex, one of the returned files, which
// the caller owns, attaches and closes. Once the container exists, Bind
// names its process (api/agent PrepareRequest.before_create).
func (c *Conn) PrepareBeforeCreate(ctr *Container) ([]Mount, []*os.File, error) {
	mounts, files, err := c.prepare(encodePrepare(ctr, false, true))
	if err != nil {
		return nil, nil, err
	}
	for _, m := range mounts {
		if m.Attached() {
			closeAll(files)
			return nil, nil, fmt.Errorf("agent: prepare: mount %s attached by the agent before the container exists", m.Target)
		}
	}
	return mounts, files, nil
}

// SendBind names the process of a container prepared with
// PrepareBeforeCreate, as this process's /proc numbers it (api/agent
// BindRequest), and returns without the answer, which BindAnswer reads;
// no other request may come between them. The agent watches the process
// from then on, and wipes the secrets when it exits.
func (c *Conn) SendBind(id string, pid int) error {
	return c.send(encodeBind(id, pid))
}

// BindAnswer reads the answer to SendBind's request.
func (c *Conn) BindAnswer() error {
	resp, files, err := c.receive()
	closeAll(files)
	if err != nil {
		return err
	}
	if !resp.bound {
		return errors.New("agent: bind: response without a result")
	}
	return nil
}

func (c *Conn) prepare(req []byte) ([]Mount, []*os.File, error) {
	resp, files, err := c.roundTrip(req)
	if err != nil {
		return nil, nil, err
	}
	if !resp.prepared {
		closeAll(files)
		return nil, nil, errors.New("agent: prepare: response without a result")
	}
	for _, m := range resp.mounts {
		if _, ok := m.Fd(len(files)); !ok && !m.Attached() {
			closeAll(files)
			return nil, nil, fmt.Errorf("agent: prepare: mount %s names fd %d of %d", m.Target, m.FdIndex, len(files))
		}
	}
	return resp.mounts, files, nil
}

// Targets asks the agent which targets the claim of ctr, a container not
// yet created, would get (paths inside the container, never contents). The
// agent refuses a claim it could not serve as Prepare would.
func (c *Conn) Targets(ctr *Container) ([]string, error) {
	resp, files, err := c.roundTrip(encodeTargets(ctr))
	closeAll(files)
	if err != nil {
		return nil, err
	}
	if !resp.targeted {
		return nil, errors.New("agent: targets: response without a result")
	}
	return resp.targets, nil
}

// Release has the agent wipe and forget the container's mount, and returns
// once it has. Releasing a container the agent does not know is not an
// error. p names the container's process when the caller knows it (zero
// if not): while the container the agent holds under id still runs, only a
// release naming its process wipes it (api/agent ReleaseRequest).
func (c *Conn) Release(id string, p Process) error {
	resp, files, err := c.roundTrip(encodeRelease(id, p, false))
	closeAll(files)
	if err != nil {
		return err
	}
	if !resp.released {
		return errors.New("agent: release: response without a result")
	}
	return nil
}

// SendRelease writes a release the agent does not answer (api/agent
// ReleaseRequest's no_reply) and returns once the request is written to
// the socket: on SOCK_SEQPACKET a datagram written before the caller
// closes is still read by the agent. It says nothing of the release's
// outcome: a nil error means only that the agent will read the request
// (an agent that dies first does not; its records and restart recovery
// wipe instead). The connection takes no further request.
func (c *Conn) SendRelease(id string, p Process) error {
	err := c.send(encodeRelease(id, p, true))
	if c.broken == nil {
		// Nothing comes back to tell a later request's answer from.
		c.broken = errors.New("a release without an answer was sent on it")
	}
	return err
}

func (c *Conn) roundTrip(req []byte) (*response, []*os.File, error) {
	if err := c.send(req); err != nil {
		return nil, nil, err
	}
	return c.receive()
}

// send writes one request. MSG_NOSIGNAL: an agent gone since the dial is
// an EPIPE, not a signal.
func (c *Conn) send(req []byte) error {
	if c.broken != nil {
		return fmt.Errorf("agent: connection unusable after an earlier failure: %w", c.broken)
	}
	if len(req) > maxMessage {
		return fmt.Errorf("agent: request of %d bytes is larger than a datagram", len(req))
	}
	c.deadline()
	var err error
	if werr := c.rc.Write(func(fd uintptr) bool {
		err = retry(func() error { return unix.Sendmsg(int(fd), req, nil, nil, unix.MSG_NOSIGNAL) })
		return err != unix.EAGAIN
	}); werr != nil {
		err = werr
	}
	if err != nil {
		c.broken = fmt.Errorf("agent: send: %w", callErr(err))
		return c.broken
	}
	return nil
}

// receive reads the answer to the request last sent.
func (c *Conn) receive() (*response, []*os.File, error) {
	if c.buf == nil {
		c.buf = make([]byte, firstBuf)
		c.oob = make([]byte, unix.CmsgSpace(maxFDs*4))
	}
	var n, oobn, flags int
	var err error
	c.deadline()
	// The datagram's length first: on SOCK_SEQPACKET, MSG_PEEK|MSG_TRUNC
	// returns its whole length and leaves it queued (with no control
	// buffer, the peek installs none of its fds). A buffer too short for
	// it grows to it, up to one byte over the largest datagram, so that a
	// longer one still shows as truncated.
	if rerr := c.rc.Read(func(fd uintptr) bool {
		err = retry(func() (err error) {
			n, _, err = unix.Recvfrom(int(fd), c.buf[:1], unix.MSG_PEEK|unix.MSG_TRUNC)
			return err
		})
		return err != unix.EAGAIN
	}); rerr != nil {
		err = rerr
	}
	if err == nil && n >= len(c.buf) {
		c.buf = make([]byte, min(n, maxMessage)+1)
	}
	buf, oob := c.buf, c.oob
	if err == nil {
		if rerr := c.rc.Read(func(fd uintptr) bool {
			err = retry(func() (err error) {
				n, oobn, flags, _, err = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
				return err
			})
			return err != unix.EAGAIN
		}); rerr != nil {
			err = rerr
		}
	}
	if c.Received != nil {
		c.Received()
	}
	if err != nil {
		c.broken = fmt.Errorf("agent: receive: %w", callErr(err))
		return nil, nil, c.broken
	}
	files, err := parseRights(oob[:oobn])
	if err != nil {
		closeAll(files)
		c.broken = fmt.Errorf("agent: receive: %w", err)
		return nil, nil, c.broken
	}
	switch {
	case n == 0 && oobn == 0:
		// A zero-length datagram on SOCK_SEQPACKET is the peer closing.
		err = errors.New("the agent closed the connection (stopped or restarted)")
	case n > maxMessage || flags&unix.MSG_TRUNC != 0:
		err = errors.New("response larger than a datagram")
	case flags&unix.MSG_CTRUNC != 0:
		err = errors.New("control message truncated: fds lost")
	}
	if err != nil {
		closeAll(files)
		c.broken = fmt.Errorf("agent: receive: %w", err)
		return nil, nil, c.broken
	}
	resp, err := decodeResponse(buf[:n])
	if err != nil {
		closeAll(files)
		return nil, nil, fmt.Errorf("agent: %w", err)
	}
	if resp.err != nil {
		closeAll(files)
		return nil, nil, resp.err
	}
	return resp, files, nil
}

// callErr names what a failed call means for the caller: a timeout
// (the connection's deadline, or a blocking connect's SO_SNDTIMEO), or an
// agent that closed the connection under a request (it stopped, was
// killed or restarted: whatever it held for the request is gone with it).
func callErr(err error) error {
	switch {
	case err == unix.EAGAIN || errors.Is(err, os.ErrDeadlineExceeded):
		return errors.New("timed out waiting for the agent")
	case errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET):
		return fmt.Errorf("the agent closed the connection (stopped or restarted): %w", err)
	}
	return err
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

func closeAll(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}
