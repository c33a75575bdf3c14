package localapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/Microsoft/go-winio"

	"github.com/lockbox-project/lockbox/api/agent"
)

// pipeSDDL lets only Administrators (BA) and SYSTEM (SY) open the pipe, and
// is protected (P) so nothing is inherited. It is the Windows counterpart of
// the Linux socket's 0600 mode and SO_PEERCRED root check: Windows refuses
// everybody else at CreateFile, so the server itself checks no caller.
const pipeSDDL = "D:P(A;;GA;;;BA)(A;;GA;;;SY)"

// Listen creates the named pipe path (`\\.\pipe\...`). It fails if the pipe
// exists: go-winio creates the first instance with FILE_CREATE, so a process
// that took the name before the agent makes the agent fail to start rather
// than share the name with it.
func Listen(path string) (net.Listener, error) {
	ln, err := winio.ListenPipe(path, &winio.PipeConfig{
		SecurityDescriptor: pipeSDDL,
		MessageMode:        true,
		InputBufferSize:    MaxMessageSize + lenSize,
		OutputBufferSize:   MaxMessageSize + lenSize,
	})
	if err != nil {
		return nil, fmt.Errorf("listen on agent pipe %s: %w", path, err)
	}
	return ln, nil
}

// Server accepts connections on the agent's pipe. The pipe's ACL admits
// Administrators and SYSTEM only (see Listen).
type Server struct {
	handler  Handler
	log      *slog.Logger
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

// checkPrepare refuses a Prepare without attach: a pipe carries no handles
// the way a unix socket carries fds, and a Windows container's secrets are
// links the agent makes in the container's root filesystem itself.
func checkPrepare(p *agent.PrepareRequest) error {
	if !p.GetAttach() || p.GetBeforeCreate() {
		return Errorf(agent.Error_INVALID, "prepare: container %q: on Windows the agent attaches the secrets itself: set attach", p.GetContainer().GetId())
	}
	return nil
}

// Serve accepts connections on ln until Close. It returns nil after Close.
func (s *Server) Serve(ln net.Listener) error {
	if !s.conns.listen(ln) {
		return nil
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.conns.isClosed() || errors.Is(err, winio.ErrPipeListenerClosed) {
				return nil
			}
			return fmt.Errorf("accept on agent pipe: %w", err)
		}
		if !s.conns.serve(conn, func() { s.serveConn(conn) }) {
			return nil
		}
	}
}

// Close stops accepting, closes every connection and waits for the
// requests in flight.
func (s *Server) Close() error { return s.conns.close() }

func (s *Server) serveConn(conn net.Conn) {
	defer conn.Close()
	ctx := context.Background()
	for {
		var req agent.Request
		if err := readMsg(conn, &req); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, winio.ErrFileClosed) {
				s.log.Warn("agent pipe: bad request", "err", err)
			}
			return
		}
		start := time.Now()
		resp, files := dispatch(ctx, s.handler, &req)
		if noReply(&req) {
			// The caller is not reading: an answer would only fail.
			closeAll(files)
			if s.observer != nil {
				s.observer.ObserveRequest(opName(&req), resultName(resp), time.Since(start))
			}
			if e := resp.GetError(); e != nil {
				s.log.Warn("agent pipe: unanswered release failed", "code", e.GetCode().String(), "err", e.GetMessage())
			}
			continue
		}
		if len(files) > 0 {
			// A handler has nothing to send on Windows; a pipe cannot
			// carry them, so they must not be kept open either.
			closeAll(files)
			resp = &agent.Response{Error: toProto(Errorf(agent.Error_UNKNOWN, "the agent returned %d handles, which a pipe cannot carry", len(files)))}
		}
		err := writeMsg(conn, resp)
		if errors.Is(err, errTruncated) {
			resp = &agent.Response{Error: &agent.Error{Code: agent.Error_UNKNOWN,
				Message: fmt.Sprintf("the agent's answer does not fit in one message: %v", err)}}
			err = writeMsg(conn, resp)
		}
		if s.observer != nil {
			s.observer.ObserveRequest(opName(&req), resultName(resp), time.Since(start))
		}
		if err != nil {
			s.log.Warn("agent pipe: reply failed", "err", err)
			return
		}
	}
}
