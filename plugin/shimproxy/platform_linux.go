package shimproxy

import (
	"context"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"

	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/internal/procstat"
	"github.com/lockbox-project/lockbox/plugin/claimrecord"
	"github.com/lockbox-project/lockbox/plugin/runtime/hotpath"
)

// linuxPlatform is the Linux side, as the Linux shim (plugin/shim) does
// it: read-only mountpoints in the spec where the agent cannot make them
// after the create, then the agent attaches the tmpfs by the init's pid.
type linuxPlatform struct{}

func defaultPlatform() platform { return linuxPlatform{} }

// beforeCreate asks the agent for the claim's targets when the runtime
// must make the mountpoints (a read-only root, a user namespace) and adds
// a read-only bind of the agent's empty file at each. A claim the agent
// could not serve fails here, before the inner shim builds anything.
func (linuxPlatform) beforeCreate(ctx context.Context, ag agentClient, c *hotpath.Claim, r *taskAPI.CreateTaskRequest) error {
	if !c.NeedsMountpoints() {
		return nil
	}
	actx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	resp, err := ag.Targets(actx, &agent.TargetsRequest{Container: toAgentContainer(c.Container(r.ID, 0, ""))})
	if err != nil {
		return err
	}
	if len(resp.GetTargets()) == 0 {
		return nil
	}
	if err := c.AddMountpoints(resp.GetTargets()); err != nil {
		return err
	}
	return c.WriteSpec()
}

// afterCreate records the claim in the bundle (before the agent holds
// anything, so that a proxy that dies here still leaves the manager's Stop
// what to release), then has the agent attach the secrets into the
// container's mount namespace by its init pid.
func (linuxPlatform) afterCreate(ctx context.Context, ag agentClient, c *hotpath.Claim, r *taskAPI.CreateTaskRequest, pid uint32) error {
	st, err := procstat.Read(int(pid))
	if err != nil {
		return fmt.Errorf("container init %d: %w", pid, err)
	}
	if err := claimrecord.Write(r.Bundle, claimrecord.Record{ID: r.ID, Service: c.Service, Pid: int32(pid), PidStart: st.Start}); err != nil {
		return err
	}
	req := &agent.PrepareRequest{Attach: true, Container: toAgentContainer(c.Container(r.ID, int(pid), "/"))}
	return prepareAttached(ctx, ag, req)
}
