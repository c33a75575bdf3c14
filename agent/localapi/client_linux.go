package localapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/lockbox-project/lockbox/api/agent"
)

// Client talks to the agent over one connection. Its methods are safe for
// concurrent use; requests on one Client are served one at a time.
type Client struct {
	mu   sync.Mutex
	conn *net.UnixConn
	buf  *recvBuf
	// broken is set once a request failed mid-way: a late response could
	// otherwise be read as the answer to the next request.
	broken error
}

// Dial connects to the agent's socket.
func Dial(socketPath string) (*Client, error) {
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: socketPath, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("dial agent at %s: %w", socketPath, err)
	}
	// The agent is root: a process of another user answering here (one
	// that could write the socket's directory) would be handed every
	// container's claim and could hand back mounts of its choosing.
	cred, err := peerCred(conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("dial agent at %s: peer credentials: %w", socketPath, err)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		conn.Close()
		return nil, Errorf(agent.Error_PERMISSION_DENIED, "the process listening on %s (pid %d) runs as uid %d, not root: it is not the agent", socketPath, cred.Pid, cred.Uid)
	}
	return &Client{conn: conn, buf: newRecvBuf()}, nil
}

// Close closes the connection. Files returned by Prepare stay open.
func (c *Client) Close() error {
	return c.conn.Close()
}

// Prepare asks the agent to build the container's secrets mount. When
// req.Attach is false the response's mounts name, by fd_index, the returned
// files, which the caller owns and must close after attaching them.
func (c *Client) Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
	resp, files, err := c.roundTrip(ctx, &agent.Request{Op: &agent.Request_Prepare{Prepare: req}})
	if err != nil {
		return nil, nil, err
	}
	p := resp.GetPrepare()
	if p == nil {
		closeAll(files)
		return nil, nil, errors.New("agent: prepare: response without a result")
	}
	if err := p.CheckFds(len(files)); err != nil {
		closeAll(files)
		return nil, nil, fmt.Errorf("agent: prepare: %w", err)
	}
	return p, files, nil
}

// Release has the agent wipe and forget the container's mount. Releasing a
// container the agent does not know is not an error.
func (c *Client) Release(ctx context.Context, containerID string) error {
	return c.ReleaseProcess(ctx, containerID, 0, 0)
}

// ReleaseProcess is Release naming the container's process (pid as the
// agent's /proc numbers it, and its start time; zero if unknown): while the
// container the agent holds under containerID still runs, only a release
// naming its process wipes it (api/agent ReleaseRequest).
func (c *Client) ReleaseProcess(ctx context.Context, containerID string, pid int32, pidStart uint64) error {
	req := &agent.ReleaseRequest{ContainerId: containerID, Pid: pid, PidStart: pidStart}
	resp, files, err := c.roundTrip(ctx, &agent.Request{Op: &agent.Request_Release{Release: req}})
	closeAll(files)
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
	resp, files, err := c.roundTrip(ctx, &agent.Request{Op: &agent.Request_Targets{Targets: req}})
	closeAll(files)
	if err != nil {
		return nil, err
	}
	if resp.GetTargets() == nil {
		return nil, errors.New("agent: targets: response without a result")
	}
	return resp.GetTargets(), nil
}

// Bind names the process of a container prepared before_create
// (agent.BindRequest).
func (c *Client) Bind(ctx context.Context, req *agent.BindRequest) error {
	resp, files, err := c.roundTrip(ctx, &agent.Request{Op: &agent.Request_Bind{Bind: req}})
	closeAll(files)
	if err != nil {
		return err
	}
	if resp.GetBind() == nil {
		return errors.New("agent: bind: response without a result")
	}
	return nil
}

// List returns the containers the agent holds mounts for.
func (c *Client) List(ctx context.Context) (*agent.ListResponse, error) {
	resp, files, err := c.roundTrip(ctx, &agent.Request{Op: &agent.Request_List{List: &agent.ListRequest{}}})
	closeAll(files)
	if err != nil {
		return nil, err
	}
	if resp.GetList() == nil {
		return nil, errors.New("agent: list: response without a result")
	}
	return resp.GetList(), nil
}

func (c *Client) roundTrip(ctx context.Context, req *agent.Request) (*agent.Response, []*os.File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return nil, nil, fmt.Errorf("agent: connection unusable after an earlier failure: %w", c.broken)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	deadline, _ := ctx.Deadline()
	if err := c.conn.SetDeadline(deadline); err != nil {
		return nil, nil, fmt.Errorf("agent: %w", err)
	}
	// Cancellation wakes a blocked read by moving the deadline into the past.
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if err := send(c.conn, req, nil); err != nil {
		c.broken = c.wrap(ctx, err)
		return nil, nil, c.broken
	}
	resp := &agent.Response{}
	files, err := recv(c.conn, resp, c.buf)
	if err != nil {
		c.broken = c.wrap(ctx, err)
		return nil, nil, c.broken
	}
	if e := resp.GetError(); e != nil {
		closeAll(files)
		return nil, nil, fromProto(e)
	}
	return resp, files, nil
}

func (c *Client) wrap(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("agent: %w", ctxErr)
	}
	return fmt.Errorf("agent: %w", err)
}
