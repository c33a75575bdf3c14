//go:build !linux && !windows

package localapi

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"

	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/internal/agentsocket"
)

// DefaultSocket is where the agent listens unless told otherwise.
const DefaultSocket = agentsocket.Default

var errUnsupported = errors.New("agent local API: SOCK_SEQPACKET sockets are Linux-only")

// Client is unavailable off Linux and Windows; Dial always fails.
type Client struct{}

// Dial fails off Linux.
func Dial(socketPath string) (*Client, error) { return nil, errUnsupported }

// Prepare fails off Linux.
func (c *Client) Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
	return nil, nil, errUnsupported
}

// Release fails off Linux.
func (c *Client) Release(ctx context.Context, containerID string) error { return errUnsupported }

// ReleaseProcess fails off Linux.
func (c *Client) ReleaseProcess(ctx context.Context, containerID string, pid int32, pidStart uint64) error {
	return errUnsupported
}

// Targets fails off Linux.
func (c *Client) Targets(ctx context.Context, req *agent.TargetsRequest) (*agent.TargetsResponse, error) {
	return nil, errUnsupported
}

// List fails off Linux.
func (c *Client) List(ctx context.Context) (*agent.ListResponse, error) { return nil, errUnsupported }

// Close does nothing off Linux.
func (c *Client) Close() error { return nil }

// Listen fails off Linux.
func Listen(path string) (*net.UnixListener, error) { return nil, errUnsupported }

// Server is unavailable off Linux.
type Server struct{}

// NewServer returns a server that cannot serve off Linux.
func NewServer(h Handler, log *slog.Logger) *Server { return &Server{} }

// SetObserver does nothing off Linux.
func (s *Server) SetObserver(o Observer) {}

// Serve fails off Linux.
func (s *Server) Serve(ln *net.UnixListener) error { return errUnsupported }

// Close does nothing off Linux.
func (s *Server) Close() error { return nil }
