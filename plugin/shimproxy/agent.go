package shimproxy

import (
	"context"
	"os"
	"time"

	"github.com/lockbox-project/lockbox/agent/localapi"
	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/plugin/runtime/agentconn"
)

// agentTimeout bounds each call to the agent; cleanupTimeout bounds taking
// back a container whose claim failed.
const (
	agentTimeout   = 30 * time.Second
	cleanupTimeout = 30 * time.Second
)

// agentClient is the part of the agent's local API the proxy uses
// (localapi.Client on either platform: a unix socket on Linux, the named
// pipe on Windows). Tests give a fake: under wine the pipe hangs.
type agentClient interface {
	Targets(ctx context.Context, req *agent.TargetsRequest) (*agent.TargetsResponse, error)
	Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error)
	ReleaseProcess(ctx context.Context, containerID string, pid int32, pidStart uint64) error
	Close() error
}

// dialAgent connects to the agent at socket.
type dialAgent func(socket string) (agentClient, error)

func dialLocalAPI(socket string) (agentClient, error) {
	c, err := localapi.Dial(socket)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// AgentSocket is the agent's local API address: LOCKBOX_AGENT_SOCKET, else
// localapi.DefaultSocket (a unix socket on Linux, \\.\pipe\lockbox-agent on
// Windows). containerd passes its environment to the shims it starts.
func AgentSocket(getenv func(string) string) string {
	if s := getenv("LOCKBOX_AGENT_SOCKET"); s != "" {
		return s
	}
	return localapi.DefaultSocket
}

// toAgentContainer is the local API's form of a claim's container.
func toAgentContainer(ctr *agentconn.Container) *agent.Container {
	out := &agent.Container{
		Id:             ctr.ID,
		Service:        ctr.Service,
		Pid:            int32(ctr.Pid),
		Rootfs:         ctr.Rootfs,
		ReadonlyRootfs: ctr.ReadonlyRootfs,
		UidMappings:    idMappings(ctr.UIDMappings),
		GidMappings:    idMappings(ctr.GIDMappings),
		Os:             ctr.OS,
	}
	if f := ctr.Facts; f != nil {
		// Like lockbox-runtime and the Linux shim, the proxy never knows
		// pod labels.
		out.Facts = &agent.ContainerFacts{ContainerdNamespace: f.ContainerdNamespace, Image: f.Image}
		if f.Pod != nil {
			out.Facts.Pod = &agent.PodFacts{Namespace: f.Pod.Namespace}
		}
	}
	return out
}

func idMappings(in []agentconn.IDMapping) []*agent.IDMapping {
	if len(in) == 0 {
		return nil
	}
	out := make([]*agent.IDMapping, len(in))
	for i, m := range in {
		out[i] = &agent.IDMapping{ContainerId: m.ContainerID, HostId: m.HostID, Size: m.Size}
	}
	return out
}
