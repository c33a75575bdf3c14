package admin

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
)

// TokenIssuer hands out join tokens (the CA owns them).
type TokenIssuer interface {
	// JoinToken returns the current token for role, first replacing it
	// with a new one when rotate is set.
	JoinToken(ctx context.Context, role types.NodeRole, rotate bool) (string, error)
}

// Unlocker holds the manager's lock state (autolock).
type Unlocker interface {
	// Locked reports whether the manager still waits for its unlock key.
	Locked() bool
	// Unlock unlocks the manager with the operator's unlock key.
	Unlock(ctx context.Context, unlockKey string) error
	// UnlockKey returns the unlock key (rotating it first when rotate is
	// set) and whether autolock is on; "" when it is off.
	UnlockKey(ctx context.Context, rotate bool) (key string, autolock bool, err error)
}

// NodeRevoker revokes a node's certificate and ends its session. It is
// called before the node leaves the store, so a failure leaves the node
// listed and the operator can retry.
type NodeRevoker interface {
	RevokeNode(ctx context.Context, node *types.Node) error
}

// DataKeyRotator re-seals every secret under a new data key.
type DataKeyRotator interface {
	RotateDataKey(ctx context.Context) (resealed int, err error)
}

// LiveNodes is what this manager's dispatcher knows of a node now (its
// heartbeats and the grants it last sent; manager/dispatcher implements
// it): nil for a node it does not serve.
type LiveNodes interface {
	LiveNode(nodeID string) *types.NodeLiveStatus
}

// Config is what a Server needs. Store is required; a nil interface makes
// its RPCs fail with Unimplemented.
type Config struct {
	Store    *store.Store
	Tokens   TokenIssuer
	Unlocker Unlocker
	Nodes    NodeRevoker
	DataKeys DataKeyRotator
	// AdminCreds issues and revokes admin credentials (cluster.go).
	AdminCreds AdminCredentialer
	// Managers lists the manager addresses handed out with join tokens;
	// nil hands out none.
	Managers func() []string
	// Live adds what the dispatcher knows of nodes to GetNode and
	// ListNodes; nil adds nothing.
	Live LiveNodes
	// Logger gets what cannot be returned (an audit entry not written);
	// nil: slog.Default().
	Logger *slog.Logger
}

// Server implements adminapi.AdminServer.
type Server struct {
	adminapi.UnimplementedAdminServer
	cfg Config
	log *slog.Logger
}

var _ adminapi.AdminServer = (*Server)(nil)

// New returns the Admin service over cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("admin: a store is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Server{cfg: cfg, log: log}, nil
}

// errLocked is what every call but Unlock gets while the manager is locked.
var errLocked = status.Error(codes.FailedPrecondition, "this manager is locked (autolock): run 'lockbox unlock' and give the cluster's unlock key")

// ready refuses calls while the manager is locked.
func (s *Server) ready() error {
	if s.cfg.Unlocker != nil && s.cfg.Unlocker.Locked() {
		return errLocked
	}
	return nil
}

// toStatus maps store and key errors onto gRPC codes. Messages of store
// errors are written for users; they name objects, never data.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var code codes.Code
	switch {
	case errors.Is(err, store.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, store.ErrNameConflict):
		code = codes.AlreadyExists
	case errors.Is(err, store.ErrInUse):
		code = codes.FailedPrecondition
	case errors.Is(err, store.ErrVersionConflict):
		// Aborted is gRPC's code for a lost read-modify-write race: the
		// client reads again and retries.
		code = codes.Aborted
	case errors.Is(err, store.ErrUnknownSecret), errors.Is(err, store.ErrInvalid), errors.Is(err, store.ErrAmbiguous):
		code = codes.InvalidArgument
	case errors.Is(err, keys.ErrLocked):
		return errLocked
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	default:
		code = codes.Internal
	}
	return status.Error(code, err.Error())
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func unimplemented(what string) error {
	return status.Errorf(codes.Unimplemented, "%s is not available on this manager", what)
}
