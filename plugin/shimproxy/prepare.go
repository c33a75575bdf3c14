package shimproxy

import (
	"context"
	"fmt"

	"github.com/lockbox-project/lockbox/api/agent"
)

// prepareAttached has the agent build and attach a container's secrets
// itself, and checks that it did.
func prepareAttached(ctx context.Context, ag agentClient, req *agent.PrepareRequest) error {
	actx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	resp, files, err := ag.Prepare(actx, req)
	for _, f := range files {
		// The agent attached itself; an fd here is unexpected and not
		// ours to keep.
		f.Close()
	}
	if err != nil {
		return err
	}
	for _, m := range resp.GetMounts() {
		if !m.Attached() {
			return fmt.Errorf("agent left mount %s for the caller to attach", m.GetTarget())
		}
	}
	return nil
}
