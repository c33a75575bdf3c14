package agent

import (
	"context"
	"errors"
	"sort"
	"sync"

	"github.com/lockbox-project/lockbox/agent/errdefs"
	"github.com/lockbox-project/lockbox/agent/grants"
	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/api/claimrule"
	"github.com/lockbox-project/lockbox/mounter"
)

// Targets answers which targets a container's claim would get, before the
// container exists: an adapter that must have the runtime make their
// mountpoints adds them to the spec. It builds and holds nothing, and
// refuses what Prepare would refuse of the claim itself (its service, its
// grants, the service's claim rules, the container's platform).
func (a *Agent) Targets(ctx context.Context, req *api.TargetsRequest) (*api.TargetsResponse, error) {
	c := req.GetContainer()
	id := c.GetId()
	if !validContainerID(id) {
		return nil, errdefs.Errorf(errdefs.Invalid, "container id %q: not a container ID", id)
	}
	if c.GetService() == "" {
		return nil, errdefs.Errorf(errdefs.Invalid, "container %s claims no service", id)
	}
	osys, err := containerOS(c.GetOs())
	if err != nil {
		return nil, err
	}
	view, err := a.admit("targets", c)
	if err != nil {
		return nil, err
	}
	plan, err := planFor(c, view, osys)
	if err != nil {
		return nil, err
	}
	return &api.TargetsResponse{Targets: targets(plan)}, nil
}

// admit restricts the grants to the claimed service and decides the claim
// with the service's claim rules, taken with those grants (the rules that
// guard exactly them), on the facts the adapter reported: the one decision
// Prepare and Targets share, taken before anything is built. A refusal is
// logged for audit and counted; it names the service and the rule, never
// anything of the secrets.
func (a *Agent) admit(op string, c *api.Container) (*grants.Restricted, error) {
	view, err := a.grants.Restrict(c.GetService())
	if err != nil {
		var ng *grants.NotGrantedError
		if errors.As(err, &ng) {
			return nil, errdefs.Errorf(errdefs.NotGranted, "%w", err)
		}
		return nil, err
	}
	facts := c.GetFacts().ClaimFacts()
	err = view.Rules().Decide(facts)
	if err == nil {
		return view, nil
	}
	var re *claimrule.RefusedError
	errors.As(err, &re)
	k8sNamespace := ""
	if facts.Pod != nil {
		k8sNamespace = facts.Pod.Namespace
	}
	rule := ""
	switch {
	case re == nil:
	case re.Default:
		rule = "default"
	case re.Unreadable:
		rule = "unreadable"
	default:
		rule = re.Rule
	}
	a.log.Warn("claim refused", "op", op, "service", c.GetService(), "container", c.GetId(),
		"containerd_namespace", facts.ContainerdNamespace, "k8s_pod", facts.Pod != nil,
		"k8s_namespace", k8sNamespace, "image", facts.Image, "rule", rule, "reason", err)
	a.refused.add(c.GetService())
	return nil, errdefs.Errorf(errdefs.Refused, "container %s may not claim service %q: %w", c.GetId(), c.GetService(), err)
}

// planFor plans the files of the claimed service's grants for the
// container, so that Targets refuses exactly what Prepare would.
func planFor(c *api.Container, view *grants.Restricted, osys mounter.OS) (*mounter.Plan, error) {
	plan, err := mounter.NewPlan(osys, view.Grants())
	if err != nil {
		return nil, errdefs.Errorf(errdefs.Invalid, "service %q: %v", c.GetService(), err)
	}
	return plan, nil
}

// refusals counts refused claims by service.
type refusals struct {
	mu sync.Mutex
	n  map[string]uint64
}

func (r *refusals) add(service string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]uint64{}
	}
	r.n[service]++
}

// RefusedClaim is the count of refused claims of one service.
type RefusedClaim struct {
	Service string
	Count   uint64
}

// RefusedClaims returns how many claims the service's claim rules refused,
// by service, sorted by service, since the agent started. Only services
// placed on the node can be refused (others are not granted), so the list
// is as long as the services that ever were.
func (a *Agent) RefusedClaims() []RefusedClaim {
	a.refused.mu.Lock()
	defer a.refused.mu.Unlock()
	out := make([]RefusedClaim, 0, len(a.refused.n))
	for s, n := range a.refused.n {
		out = append(out, RefusedClaim{Service: s, Count: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}
