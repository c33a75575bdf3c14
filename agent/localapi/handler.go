package localapi

import (
	"context"
	"os"
	"time"

	"github.com/lockbox-project/lockbox/api/agent"
)

// Handler serves the requests of the local API. Errors of type *Error, and
// domain errors (agent/errdefs) by their kind, reach the caller with their
// code (WireError); any other error is reported as UNKNOWN.
type Handler interface {
	// Prepare builds a container's mount. The files it returns are sent to
	// the caller and then closed by the server: return duplicates of any fd
	// the handler keeps.
	Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error)
	Release(ctx context.Context, containerID string) error
	List(ctx context.Context) (*agent.ListResponse, error)
}

// RequestReleaser is a Handler that takes the whole release request (the
// container's process it may name, see agent.ReleaseRequest); the server
// calls ReleaseRequest instead of Release when the Handler has it.
type RequestReleaser interface {
	ReleaseRequest(ctx context.Context, req *agent.ReleaseRequest) error
}

// Targeter is a Handler that can say, before a container exists, which
// targets its claim would get (agent.TargetsRequest); the server answers a
// targets request with INVALID when the Handler lacks it.
type Targeter interface {
	Targets(ctx context.Context, req *agent.TargetsRequest) (*agent.TargetsResponse, error)
}

// Binder is a Handler that can hold a container prepared before it was
// created and learn its process afterwards (agent.BindRequest); the server
// answers a bind request with INVALID when the Handler lacks it.
type Binder interface {
	Bind(ctx context.Context, req *agent.BindRequest) error
}

// Observer is told of every request the server answers: its operation
// ("prepare", "release", "list", "targets", "bind", or "none" for a request that names
// none), the result ("OK" or the agent.Error_Code's name) and how long
// the server took to answer it, from the request read to the answer sent.
// It is called on the connection's goroutine and must not block; it is
// never given anything of the request itself.
type Observer interface {
	ObserveRequest(op, result string, took time.Duration)
}

// Peer is the process at the other end of a connection, as SO_PEERCRED
// reported it when the connection was accepted.
type Peer struct {
	Pid int32
	UID uint32
	GID uint32

	// peerPin pins the process that connected where the platform can (a
	// pidfd on Linux), so that Alive can tell whether Pid still names it.
	peerPin
}

type peerKey struct{}

// PeerFromContext returns the caller of the request a Handler serves.
func PeerFromContext(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	return p, ok
}
