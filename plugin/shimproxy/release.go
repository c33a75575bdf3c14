package shimproxy

import (
	"context"
	"fmt"

	"github.com/lockbox-project/lockbox/plugin/claimrecord"
)

// releaseFromDisk releases the container recorded in bundle, if any, and
// removes the record once the agent has released it. Releasing is
// idempotent: an agent that holds nothing for the ID answers yes, and a
// second call finds no record and asks nothing.
func releaseFromDisk(ctx context.Context, dial dialAgent, socket, bundle string) error {
	if bundle == "" {
		return nil
	}
	rec, err := claimrecord.Read(bundle)
	if err != nil || rec == nil {
		return err
	}
	cl, err := dial(socket)
	if err != nil {
		return fmt.Errorf("release %s: lockbox agent not reachable: %w", rec.ID, err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	if err := cl.ReleaseProcess(ctx, rec.ID, rec.Pid, rec.PidStart); err != nil {
		return fmt.Errorf("release %s: %w", rec.ID, err)
	}
	return claimrecord.Remove(bundle)
}
