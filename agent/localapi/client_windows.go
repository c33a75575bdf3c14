package localapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/Microsoft/go-winio"

	"github.com/lockbox-project/lockbox/api/agent"
)

// dialTimeout bounds the wait for a free pipe instance when the agent is
// busy accepting; a missing pipe fails at once.
var dialTimeout = 5 * time.Second

// Client talks to the agent over one pipe connection. Its methods are safe
// for concurrent use; requests on one Client are served one at a time.
type Client struct {
	mu   sync.Mutex
	conn net.Conn
	// broken is set once a request failed mid-way: a late response could
	// otherwise be read as the answer to the next request.
	broken error
}

// Dial connects to the agent's named pipe. Only Administrators and SYSTEM
// can open it (see Listen).
func Dial(socketPath string) (*Client, error) {
	conn, err := winio.DialPipe(socketPath, &dialTimeout)
	if err != nil {
		return nil, fmt.Errorf("dial agent at %s: %w", socketPath, err)
	}
	return &Client{conn: conn}, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	return c.conn.Close()
}

// Prepare asks the agent to build and attach the container's secrets.
// req.Attach must be set: a pipe carries no handles, so the agent refuses a
// Prepare without it (INVALID). The returned files are always nil; the
// signature is the Linux client's.
func (c *Client) Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
	resp, err := c.roundTrip(ctx, &agent.Request{Op: &agent.Request_Prepare{Prepare: req}})
	if err != nil {
		return nil, nil, err
	}
	p := resp.GetPrepare()
	if p == nil {
		return nil, nil, errors.New("agent: prepare: response without a result")
	}
	if err := p.CheckFds(0); err != nil {
		return nil, nil, fmt.Errorf("agent: prepare: %w (a pipe carries no handle)", err)
	}
	return p, nil, nil
}

// Release has the agent wipe and forget the container's secrets. Releasing
// a container the agent does not know is not an error.
func (c *Client) Release(ctx context.Context, containerID string) error {
	return c.ReleaseProcess(ctx, containerID, 0, 0)
}

// ReleaseProcess is Release naming the container's process (pid as the
// agent's /proc numbers it, and its start time; zero if unknown): while the
// container the agent holds under containerID still runs, only a release
// naming its process wipes it (api/agent ReleaseRequest).
func (c *Client) ReleaseProcess(ctx context.Context, containerID string, pid int32, pidStart uint64) error {
	req := &agent.ReleaseRequest{ContainerId: containerID, Pid: pid, PidStart: pidStart}
	resp, err := c.roundTrip(ctx, &agent.Request{Op: &agent.Request_Release{Release: req}})
	if err != nil {
		return err
	}
	if resp.GetRelease() == nil {
		return errors.New("agent: release: response without a result")
	}
	return nil
}

// Targets asks the agent which targets the claim of a container not yet
// created would get (agent.TargetsRequest): paths only. Its signature is
// the Handler's (Targeter), so that a caller runs the same in-process and
// over the socket.
func (c *Client) Targets(ctx context.Context, req *agent.TargetsRequest) (*agent.TargetsResponse, error) {
	resp, err := c.roundTrip(ctx, &agent.Request{Op: &agent.Request_Targets{Targets: req}})
	if err != nil {
		return nil, err
	}
	if resp.GetTargets() == nil {
		return nil, errors.New("agent: targets: response without a result")
	}
	return resp.GetTargets(), nil
}

// List returns the containers the agent holds secrets for.
func (c *Client) List(ctx context.Context) (*agent.ListResponse, error) {
	resp, err := c.roundTrip(ctx, &agent.Request{Op: &agent.Request_List{List: &agent.ListRequest{}}})
	if err != nil {
		return nil, err
	}
	if resp.GetList() == nil {
		return nil, errors.New("agent: list: response without a result")
	}
	return resp.GetList(), nil
}

func (c *Client) roundTrip(ctx context.Context, req *agent.Request) (*agent.Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return nil, fmt.Errorf("agent: connection unusable after an earlier failure: %w", c.broken)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	if err := c.conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	// Cancellation wakes a blocked read by moving the deadline into the past.
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if err := writeMsg(c.conn, req); err != nil {
		c.broken = c.wrap(ctx, err)
		return nil, c.broken
	}
	resp := &agent.Response{}
	if err := readMsg(c.conn, resp); err != nil {
		c.broken = c.wrap(ctx, err)
		return nil, c.broken
	}
	if e := resp.GetError(); e != nil {
		return nil, fromProto(e)
	}
	return resp, nil
}

func (c *Client) wrap(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("agent: %w", ctxErr)
	}
	return fmt.Errorf("agent: %w", err)
}
