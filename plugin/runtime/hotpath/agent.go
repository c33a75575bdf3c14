package hotpath

import (
	"os"
	"time"

	"github.com/lockbox-project/lockbox/plugin/runtime/agentconn"
)

// Agent is the part of the agent's local API client the wrapper and the
// hook use (agentconn.Conn).
type Agent interface {
	Prepare(c *agentconn.Container, attach bool) ([]agentconn.Mount, []*os.File, error)
	// Targets says which targets the claim of a container not yet created
	// would get (agentconn.Conn.Targets).
	Targets(c *agentconn.Container) ([]string, error)
	// Release names the container's process when the caller knows it
	// (agentconn.Conn.Release).
	Release(containerID string, p agentconn.Process) error
	Close() error
}

// Dialer connects to the agent socket; every call on the connection fails
// after timeout.
type Dialer func(socket string, timeout time.Duration) (Agent, error)
