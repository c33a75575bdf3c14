package manager

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/manager/keys"
)

// A manager restarted with autolock has its key files sealed: it cannot
// start etcd (whose peer key is one of them) nor its TCP listener. It
// serves Admin.Unlock alone, on the root-only admin socket, until an
// unlock key opens its files; the same server then serves the full Admin
// service.

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
	m *Manager
}

func (l *lockedAdmin) Unlock(ctx context.Context, req *adminapi.UnlockRequest) (*adminapi.UnlockResponse, error) {
	if req.GetUnlockKey() == "" {
		return nil, status.Error(codes.InvalidArgument, "the unlock key is empty")
	}
	r := unlockReq{key: req.UnlockKey, reply: make(chan error, 1)}
	select {
	case l.m.unlockReqs <- r:
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

// awaitUnlock serves Unlock alone (on the admin socket) until a key whose
// KEK open accepts arrives, and returns that KEK (the caller zeroes it).
// The caller answers the Unlock call with finishUnlock once the manager
// serves, or failed to.
func (m *Manager) awaitUnlock(ctx context.Context, open func(*keys.KEK) error) (*keys.KEK, error) {
	if m.sock == nil {
		return nil, errors.New("manager: this manager is locked (autolock) and is unlocked only through its admin socket: start it with --admin-socket")
	}
	m.log.Warn("autolock: this manager is locked; it serves nothing until 'lockbox unlock' on its admin socket", "admin_socket", m.cfg.AdminSocket)
	if m.cfg.MetricsAddr != "" {
		ms, err := m.serveLockedMetrics()
		if err != nil {
			return nil, fmt.Errorf("manager: %w", err)
		}
		defer ms.Close()
	}
	m.awaiting.Store(true)
	defer m.awaiting.Store(false)
	m.markReady()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case r := <-m.unlockReqs:
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

// finishUnlock answers the Unlock call awaitUnlock accepted, if any. Safe
// to call again.
func (m *Manager) finishUnlock(err error) {
	if m.pendingUnlock != nil {
		m.pendingUnlock <- err
		m.pendingUnlock = nil
	}
}

func (m *Manager) markReady() { m.readyOnce.Do(func() { close(m.ready) }) }

// socketServer is the admin socket's one gRPC server, from the start of Run
// to its end: while the manager is locked it serves lockedAdmin's Unlock;
// once the Admin service is up (fullAdmin) every call goes there. One
// server, so that a client's connection carries over the unlock.
func (m *Manager) socketServer() *grpc.Server {
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(m.adminMetrics.unary, m.socketGuard),
		grpc.ChainStreamInterceptor(func(_ any, _ grpc.ServerStream, info *grpc.StreamServerInfo, _ grpc.StreamHandler) error {
			return status.Errorf(codes.PermissionDenied, "%s is not served on the admin socket", info.FullMethod)
		}),
		grpc.MaxRecvMsgSize(maxRecvMsgSize), grpc.MaxConcurrentStreams(maxConcurrentStreams))
	adminapi.RegisterAdminServer(srv, &lockedAdmin{m: m})
	return srv
}

// socketGuard serves only the Admin service (the peer was checked at
// accept: uid 0), only Unlock while locked, and hands each call to the
// Admin service once it is up.
func (m *Manager) socketGuard(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if !strings.HasPrefix(info.FullMethod, adminService) {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not served on the admin socket", info.FullMethod)
	}
	full := m.fullAdmin.Load()
	if full == nil {
		switch {
		case !m.awaiting.Load():
			return nil, status.Error(codes.Unavailable, "the manager is starting")
		case info.FullMethod != unlockMethod:
			return nil, errLockedStatus
		}
		return h(ctx, req)
	}
	if m.keys.Locked() && info.FullMethod != unlockMethod {
		return nil, errLockedStatus
	}
	name := strings.TrimPrefix(info.FullMethod, adminService)
	for _, md := range adminapi.Admin_ServiceDesc.Methods {
		if md.MethodName == name {
			return md.Handler(full, ctx, func(v any) error {
				proto.Merge(v.(proto.Message), req.(proto.Message))
				return nil
			}, nil)
		}
	}
	return nil, status.Errorf(codes.Unimplemented, "%s is not served on the admin socket", info.FullMethod)
}

var errLockedStatus = status.Error(codes.FailedPrecondition, "this manager is locked (autolock): run 'lockbox unlock' with the cluster's unlock key")
