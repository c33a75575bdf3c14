package agent

import (
	"maps"

	"github.com/lockbox-project/lockbox/api/claimrule"
)

// ClaimFacts is the agent's reading of the facts an adapter reported:
// what the service's claim rules are decided on (claimrule.Set.Decide).
// No facts at all (an adapter older than claim rules) read as a container
// outside Kubernetes of which nothing is known: it may claim a service
// without rules, and every rule fails for it.
func (f *ContainerFacts) ClaimFacts() claimrule.Facts {
	if f == nil {
		return claimrule.Facts{}
	}
	out := claimrule.Facts{ContainerdNamespace: f.GetContainerdNamespace(), Image: f.GetImage()}
	if p := f.GetPod(); p != nil {
		out.Pod = &claimrule.Pod{Namespace: p.GetNamespace(), LabelsKnown: p.GetLabelsKnown()}
		if p.GetLabelsKnown() {
			out.Pod.Labels = maps.Clone(p.GetLabels())
		}
	}
	return out
}
