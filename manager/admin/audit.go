package admin

import (
	"context"
	"time"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/store"
	"github.com/lockbox-project/lockbox/pki"
)

// actor names the caller for the audit log. Over TCP it is the verified
// admin certificate's identity (the server's interceptor admitted only
// admin certificates to this service); a call with no certificate can only
// have come through the manager's root-only admin socket.
func actor(ctx context.Context) string {
	who, err := pki.PeerIdentity(ctx)
	if err != nil {
		return store.AuditActorLocalRoot
	}
	if who.Role == pki.RoleAdmin {
		return who.NodeID
	}
	return who.Role.String() + " " + who.NodeID
}

// audited is ctx under which the store records the caller with each
// change it commits.
func audited(ctx context.Context) context.Context {
	return store.WithAuditActor(ctx, actor(ctx))
}

// record appends an entry for a change made outside the store's object
// writes (keys, tokens, credentials), after it succeeded. The change
// stands if the entry cannot be written; that is logged.
func (s *Server) record(ctx context.Context, action, kind, id, name string) {
	e := &types.AuditEntry{Actor: actor(ctx), Action: action, ObjectKind: kind, ObjectId: id, ObjectName: name}
	if err := s.cfg.Store.AppendAudit(ctx, e); err != nil {
		s.log.Warn("audit entry not written", "action", action, "actor", e.Actor, "err", err)
	}
}

// ListAudit returns one page of the audit log, oldest first.
func (s *Server) ListAudit(ctx context.Context, req *adminapi.ListAuditRequest) (*adminapi.ListAuditResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	var since time.Time
	if req.GetSince() != nil {
		since = req.GetSince().AsTime()
	}
	entries, next, err := s.cfg.Store.ListAudit(ctx, since, req.GetAfter(), int(req.GetLimit()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminapi.ListAuditResponse{Entries: entries, NextPage: next}, nil
}
