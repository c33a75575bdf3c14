package localapi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/internal/sockdir"
	"github.com/lockbox-project/lockbox/internal/steptrace"
)

// Server accepts connections on the agent socket and serves root callers.
type Server struct {
	handler Handler
	log     *slog.Logger
	// allowUID is the only peer uid served. It is 0 outside tests.
	allowUID uint32
	observer Observer

	conns conns
}

// NewServer returns a server for h that logs to log.
func NewServer(h Handler, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{handler: h, log: log}
}

// SetObserver makes the server report every request to o (metrics). It
// must be called before Serve.
func (s *Server) SetObserver(o Observer) { s.observer = o }

func (s *Server) observe(op, result string, start time.Time) {
	if s.observer != nil {
		s.observer.ObserveRequest(op, result, time.Since(start))
	}
}

// Listen creates the socket at path: a missing directory is made 0700,
// the socket itself is made 0600, and a stale socket left by an earlier run
// is removed. An existing directory is used as it is, never chmod'ed (a
// --socket in /run must not close /run to everyone else), but only if the
// agent's user owns it and nobody else may write it: whoever can write the
// directory can replace the socket.
func Listen(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := sockdir.Ensure(dir, "agent socket", "the default "+filepath.Dir(DefaultSocket)); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("agent socket %s: exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale agent socket %s: %w", path, err)
		}
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("listen on agent socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("agent socket %s: %w", path, err)
	}
	return ln, nil
}

// Serve accepts connections on ln until Close. It returns nil after Close.
func (s *Server) Serve(ln *net.UnixListener) error {
	if !s.conns.listen(ln) {
		return nil
	}
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if s.conns.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept on agent socket: %w", err)
		}
		if !s.conns.serve(conn, func() { s.serveConn(conn) }) {
			return nil
		}
	}
}

// Close stops accepting, closes every connection and waits for the
// requests in flight.
func (s *Server) Close() error { return s.conns.close() }

// refusedReadTimeout bounds the wait for the request of a caller that is
// refused anyway.
var refusedReadTimeout = time.Second

func peerCred(conn *net.UnixConn) (*unix.Ucred, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, credErr
}

func (s *Server) serveConn(conn *net.UnixConn) {
	defer conn.Close()
	cred, err := peerCred(conn)
	if err != nil {
		s.log.Warn("agent socket: cannot read peer credentials", "err", err)
		return
	}
	if cred.Uid != s.allowUID {
		// Read the request first so the refusal is the answer the caller
		// waits for, not a broken pipe on its send.
		// Bounded: a refused caller must not hold a goroutine and a
		// receive buffer by never sending.
		start := time.Now()
		conn.SetReadDeadline(start.Add(refusedReadTimeout))
		var req agent.Request
		if files, err := recv(conn, &req, nil); err == nil {
			closeAll(files)
		}
		defer s.observe(opName(&req), agent.Error_PERMISSION_DENIED.String(), start)
		s.log.Warn("agent socket: refused caller", "uid", cred.Uid, "pid", cred.Pid)
		send(conn, &agent.Response{Error: &agent.Error{
			Code:    agent.Error_PERMISSION_DENIED,
			Message: fmt.Sprintf("caller uid %d is not root", cred.Uid),
		}}, nil)
		return
	}
	proc := openPeerProc(conn, cred.Pid)
	defer proc.close()
	ctx := context.WithValue(context.Background(), peerKey{}, Peer{Pid: cred.Pid, UID: cred.Uid, GID: cred.Gid, peerPin: peerPin{proc: proc}})
	rb := getRecvBuf()
	defer putRecvBuf(rb)
	for {
		var req agent.Request
		files, err := recv(conn, &req, rb)
		// Callers send no fds; drop any that came.
		closeAll(files)
		if err != nil {
			if !errors.Is(err, errEOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Warn("agent socket: bad request", "pid", cred.Pid, "err", err)
			}
			return
		}
		start := time.Now()
		resp, out := dispatch(ctx, s.handler, &req)
		if noReply(&req) {
			// The caller is not reading (it may have closed, or exited):
			// an answer would only fail. What it would have said is
			// logged instead.
			closeAll(out)
			s.observe(opName(&req), resultName(resp), start)
			s.logUnanswered(cred.Pid, resp)
			continue
		}
		id := traceID(&req)
		trace.Mark(id, "agent-answer")
		err = send(conn, resp, out)
		trace.Mark(id, "agent-sent")
		closeAll(out)
		if errors.Is(err, errTruncated) || errors.Is(err, errTooManyFDs) {
			// Nothing was sent: say why instead of leaving the caller
			// with a closed connection. A Prepare's mount stays held
			// until the caller, failing the container, releases it.
			resp = &agent.Response{Error: &agent.Error{Code: agent.Error_UNKNOWN,
				Message: fmt.Sprintf("the agent's answer does not fit in one message: %v", err)}}
			err = send(conn, resp, nil)
		}
		s.observe(opName(&req), resultName(resp), start)
		if err != nil {
			s.log.Warn("agent socket: reply failed", "pid", cred.Pid, "err", err)
			return
		}
	}
}

// trace is the phase benchmark's tracer (internal/steptrace), nil unless
// its variable is set when the agent starts: then a step costs a nil check.
var trace = steptrace.Open(os.Getenv)

// traceID is the container a traced request names ("" untraced).
func traceID(req *agent.Request) string {
	if trace == nil {
		return ""
	}
	if p := req.GetPrepare(); p != nil {
		return p.GetContainer().GetId()
	}
	return ""
}

// logUnanswered logs the failure of a request that asked for no answer
// (the caller cannot learn of it otherwise).
func (s *Server) logUnanswered(pid int32, resp *agent.Response) {
	if e := resp.GetError(); e != nil {
		s.log.Warn("agent socket: unanswered release failed", "pid", pid, "code", e.GetCode().String(), "err", e.GetMessage())
	}
}

// checkPrepare refuses what the Linux agent cannot attach. The agent
// attaches by entering the mount namespace of the container's process.
// Without one it would attach in its own namespace, the host's: the secrets
// would appear on the host.
func checkPrepare(p *agent.PrepareRequest) error {
	if p.GetBeforeCreate() && (p.GetAttach() || p.GetContainer().GetPid() != 0) {
		// Before the container exists there is no process to attach in or
		// to name: its pid comes with the BindRequest.
		return Errorf(agent.Error_INVALID, "prepare: container %q: before its create a container has no process: no attach, no pid", p.GetContainer().GetId())
	}
	if p.GetAttach() && p.GetContainer().GetPid() <= 0 {
		return Errorf(agent.Error_INVALID, "prepare: container %q: attach needs the pid of a process in the container", p.GetContainer().GetId())
	}
	return nil
}
