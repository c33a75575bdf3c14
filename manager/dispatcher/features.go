package dispatcher

import (
	"strings"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/store"
)

// An agent enforces only what it was built to read. One built before claim
// rules ignores ServiceGrants.claim_rules (an unknown field to it) and
// admits any claim of the service: during a rolling upgrade (managers
// first) it would serve a claim-ruled service's secrets to any container
// that names the service. So each session announces what its agent
// enforces (SessionRequest.features), and a service that needs what the
// session did not announce is not placed on that session's node: its
// grants and the secrets only it references never reach that agent. The
// announcement is part of the placement match (service.placedOn), so
// views stay content-interned, moves and COMPLETE builds stay shared among
// sessions that get the same services, and a service that gains claim
// rules is removed from such nodes like any service whose placement stops
// matching.

// caps is what a session's agent announced it enforces, as placement
// reads it.
type caps struct {
	claimRules bool
}

// capsOf reads the announcement of a session request. A request that
// announces nothing is an agent from before announcements: it enforces
// nothing.
func capsOf(req *dapi.SessionRequest) caps {
	return caps{claimRules: req.Announces(dapi.AgentFeature_AGENT_FEATURE_CLAIM_RULES)}
}

// allCaps is what this build's agent announces.
var allCaps = capsOf(&dapi.SessionRequest{Features: dapi.AgentFeatures()})

// servable reports whether a session with caps c may be sent service s:
// a service with claim rules goes only to an agent that enforces them.
// The one home of this rule.
func (c caps) servable(s *types.Service) bool {
	return c.claimRules || len(s.GetSpec().GetClaimRules()) == 0
}

// warning is what the node shows operators (Node.description.warnings,
// `lockbox node inspect`) while its agent withholds something; "" when
// nothing is withheld.
func (c caps) warning() string {
	if c.claimRules {
		return ""
	}
	return noClaimRulesWarning
}

// managerWarningPrefix starts every warning the manager sets on a node.
// The node's warnings are replaced at each session: those with this prefix
// are the manager's, so an earlier session's go (whatever their wording in
// the manager version that set them), and an agent cannot pass its own off
// as the manager's.
const managerWarningPrefix = "manager: "

// noClaimRulesWarning is the manager's warning on a node whose agent does
// not enforce claim rules.
const noClaimRulesWarning = managerWarningPrefix + "this node's agent does not enforce claim rules (it is older than them); services with claim rules are withheld from this node, and their claims fail here, until the agent is upgraded"

// sessionWarnings is the node's warnings for a session: the agent's
// (without any that read as the manager's: managerWarningPrefix) and then
// the manager's own for c, within store.MaxNodeWarnings (the manager's is
// kept, the agent's last one gives way).
func sessionWarnings(agent []string, c caps) []string {
	out := make([]string, 0, len(agent)+1)
	for _, w := range agent {
		if !strings.HasPrefix(w, managerWarningPrefix) {
			out = append(out, w)
		}
	}
	if w := c.warning(); w != "" {
		if len(out) >= store.MaxNodeWarnings {
			out = out[:store.MaxNodeWarnings-1]
		}
		out = append(out, w)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
