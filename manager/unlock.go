package manager

import (
	"context"
	"errors"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/manager/keys"
)

// A manager restarted with autolock has its key files sealed: it cannot
// start etcd (whose peer key is one of them) nor its TCP listener. It
// serves Admin.Unlock alone, on the root-only admin socket, until an
// unlock key opens its files; the same socket then serves the full Admin
// service (connections are handed from one server to the next by a
// connQueue, so the socket never disappears in between).

// errRotatedWhileDown: the key opened this manager's files, but not the
// cluster's keyring.
var errRotatedWhileDown = errors.New("this key opened the manager's key files, but the cluster's unlock key was rotated while it was down: run 'lockbox unlock' again with the current unlock key")

type unlockReq struct {
	key   string
	reply chan error
}

// lockedAdmin is the Admin service of a manager whose key files are sealed.
type lockedAdmin struct {
	adminapi.UnimplementedAdminServer
	reqs chan<- unlockReq
}

func (l *lockedAdmin) Unlock(ctx context.Context, req *adminapi.UnlockRequest) (*adminapi.UnlockResponse, error) {
	if req.GetUnlockKey() == "" {
		return nil, status.Error(codes.InvalidArgument, "the unlock key is empty")
	}
	r := unlockReq{key: req.UnlockKey, reply: make(chan error, 1)}
	select {
	case l.reqs <- r:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	var err error
	select {
	case err = <-r.reply:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	// Never echo the key back: the messages below name no key.
	switch {
	case err == nil:
		return &adminapi.UnlockResponse{}, nil
	case errors.Is(err, keys.ErrBadUnlockKey):
		return nil, status.Error(codes.InvalidArgument, keys.ErrBadUnlockKey.Error())
	case errors.Is(err, keys.ErrWrongKey):
		return nil, status.Error(codes.InvalidArgument, "wrong unlock key: it does not open this manager's key files (if the unlock key was rotated while this manager was down, give the previous key first, then the current one)")
	case errors.Is(err, errRotatedWhileDown):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, keys.ErrCorrupt):
		return nil, status.Error(codes.DataLoss, "this manager's sealed key file is corrupt or was tampered with")
	}
	return nil, status.Error(codes.Internal, err.Error())
}

// awaitUnlock serves Unlock alone on the admin socket until a key whose
// KEK open accepts arrives, and returns that KEK (the caller zeroes it).
// The caller answers the Unlock call with finishUnlock once the manager
// serves, or failed to.
func (m *Manager) awaitUnlock(ctx context.Context, open func(*keys.KEK) error) (*keys.KEK, error) {
	if m.sockQ == nil {
		return nil, errors.New("manager: this manager is locked (autolock) and is unlocked only through its admin socket: start it with --admin-socket")
	}
	reqs := make(chan unlockReq)
	u, s := socketOnly(func() bool { return true })
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(m.adminMetrics.unary, u), grpc.ChainStreamInterceptor(s), grpc.MaxRecvMsgSize(maxRecvMsgSize))
	adminapi.RegisterAdminServer(srv, &lockedAdmin{reqs: reqs})
	go srv.Serve(m.sockQ.listener())
	m.lockedSrv = srv
	m.log.Warn("autolock: this manager is locked; it serves nothing until 'lockbox unlock' on its admin socket", "admin_socket", m.cfg.AdminSocket)
	m.markReady()
	for {
		select {
		case <-ctx.Done():
			srv.Stop()
			return nil, ctx.Err()
		case r := <-reqs:
			kek, err := keys.KEKFromUnlockKey(r.key)
			if err == nil {
				if err = open(kek); err != nil {
					kek.Zero()
				}
			}
			if err != nil {
				r.reply <- err
				continue
			}
			m.pendingUnlock = r.reply
			return kek, nil
		}
	}
}

// finishUnlock answers the Unlock call awaitUnlock accepted, if any, and
// stops the locked server (after that call returns). Safe to call again.
func (m *Manager) finishUnlock(err error) {
	if m.pendingUnlock != nil {
		m.pendingUnlock <- err
		m.pendingUnlock = nil
	}
	if m.lockedSrv != nil {
		go m.lockedSrv.GracefulStop()
		m.lockedSrv = nil
	}
}

func (m *Manager) markReady() { m.readyOnce.Do(func() { close(m.ready) }) }

// connQueue hands the connections of one listener to a succession of
// servers: each gets a view (listener) whose Close stops it alone.
type connQueue struct {
	l     net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newConnQueue(l net.Listener) *connQueue {
	q := &connQueue{l: l, conns: make(chan net.Conn), done: make(chan struct{})}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				q.close()
				return
			}
			select {
			case q.conns <- c:
			case <-q.done:
				c.Close()
				return
			}
		}
	}()
	return q
}

func (q *connQueue) close() {
	q.once.Do(func() {
		close(q.done)
		q.l.Close()
	})
}

func (q *connQueue) listener() net.Listener {
	return &queueView{q: q, closed: make(chan struct{})}
}

type queueView struct {
	q      *connQueue
	closed chan struct{}
	once   sync.Once
}

func (v *queueView) Accept() (net.Conn, error) {
	select {
	case c := <-v.q.conns:
		return c, nil
	case <-v.closed:
		return nil, net.ErrClosed
	case <-v.q.done:
		return nil, net.ErrClosed
	}
}

func (v *queueView) Close() error {
	v.once.Do(func() { close(v.closed) })
	return nil
}

func (v *queueView) Addr() net.Addr { return v.q.l.Addr() }
