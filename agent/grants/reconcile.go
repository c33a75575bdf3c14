package grants

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/lockbox-project/lockbox/api/claimrule"
	"github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/mounter"
)

// Service is one service placed on the node and the grants it holds. The
// grants' Size is left zero here; Restrict fills it from the secret.
type Service struct {
	ID     string
	Name   string
	Grants []mounter.Grant
	// Rules are the service's claim rules as this agent reads them: rules
	// it cannot read refuse every claim (claimrule.FromWire) rather than
	// fail the message, which would stop every other update too.
	Rules claimrule.Set
	// LiveUpdate says the service's running containers get a change of
	// these grants (a live update); without it they keep what they have.
	LiveUpdate bool
}

// SecretMeta is what the node knows about a secret it holds the bytes of.
type SecretMeta struct {
	Name string
	Size int64
}

// State is everything the node holds except the secret bytes. Reconcile
// never modifies a State it is given.
type State struct {
	// Revision is the revision of the last message applied.
	Revision uint64
	// Services by service ID.
	Services map[string]Service
	// Secrets by secret ID.
	Secrets map[string]SecretMeta
}

// Diff says what the owner of the secret buffers must do to follow a
// Reconcile: free Drop (by secret ID) first, then load Load.
type Diff struct {
	Drop []string
	// Load points into the message: the caller copies the data to locked
	// memory and zeroes it.
	Load []*dispatcher.SecretData
}

// ErrUnknownServiceFields is why every claim of a service is refused when
// it arrived with fields this agent does not know (Service.Rules).
var ErrUnknownServiceFields = errors.New("the manager sent the service with fields this agent does not know (one may restrict who may claim it)")

// ReconcileError is a message that cannot be applied; the session should
// ask for a complete snapshot again.
type ReconcileError struct {
	Revision uint64
	Reason   string
}

func (e *ReconcileError) Error() string {
	return fmt.Sprintf("apply message at revision %d: %s", e.Revision, e.Reason)
}

// Reconcile applies msg to cur. A COMPLETE message replaces everything; an
// INCREMENTAL one patches. Secrets no service references any more are
// dropped either way: a node keeps no bytes without a grant. cur is left
// untouched, and on error nothing is to be done.
func Reconcile(cur State, msg *dispatcher.SessionMessage) (State, Diff, error) {
	fail := func(format string, args ...any) (State, Diff, error) {
		return cur, Diff{}, &ReconcileError{Revision: msg.GetRevision(), Reason: fmt.Sprintf(format, args...)}
	}
	next := State{Revision: msg.GetRevision()}
	switch msg.GetType() {
	case dispatcher.SessionMessage_COMPLETE:
		next.Services = map[string]Service{}
		next.Secrets = map[string]SecretMeta{}
	case dispatcher.SessionMessage_INCREMENTAL:
		if msg.GetRevision() < cur.Revision {
			return fail("older than the revision held (%d)", cur.Revision)
		}
		next.Services = maps.Clone(cur.Services)
		next.Secrets = maps.Clone(cur.Secrets)
		if next.Services == nil {
			next.Services = map[string]Service{}
		}
		if next.Secrets == nil {
			next.Secrets = map[string]SecretMeta{}
		}
	default:
		return fail("unknown message type %v", msg.GetType())
	}

	// loaded: secret ID -> index in load, so that a later change in the same
	// message wins over an earlier one.
	loaded := map[string]int{}
	var load []*dispatcher.SecretData
	for i, ch := range msg.GetChanges() {
		remove := ch.GetAction() == dispatcher.AssignmentChange_REMOVE
		if msg.GetType() == dispatcher.SessionMessage_COMPLETE && remove {
			return fail("change %d: REMOVE in a COMPLETE message", i)
		}
		switch item := ch.GetAssignment().GetItem().(type) {
		case *dispatcher.Assignment_Secret:
			s := item.Secret
			if s.GetId() == "" {
				return fail("change %d: secret without an ID", i)
			}
			if remove {
				delete(next.Secrets, s.GetId())
				if j, ok := loaded[s.GetId()]; ok {
					load[j] = nil
					delete(loaded, s.GetId())
				}
				continue
			}
			if len(s.GetData()) == 0 || len(s.GetData()) >= mounter.MaxSecretSize {
				return fail("change %d: secret %q: size %d out of range", i, s.GetName(), len(s.GetData()))
			}
			next.Secrets[s.GetId()] = SecretMeta{Name: s.GetName(), Size: int64(len(s.GetData()))}
			if j, ok := loaded[s.GetId()]; ok {
				load[j] = s
			} else {
				loaded[s.GetId()] = len(load)
				load = append(load, s)
			}
		case *dispatcher.Assignment_Service:
			sg := item.Service
			if sg.GetServiceId() == "" {
				return fail("change %d: service without an ID", i)
			}
			if remove {
				delete(next.Services, sg.GetServiceId())
				continue
			}
			if sg.GetServiceName() == "" {
				return fail("change %d: service %s without a name", i, sg.GetServiceId())
			}
			svc := Service{ID: sg.GetServiceId(), Name: sg.GetServiceName(), Grants: make([]mounter.Grant, 0, len(sg.GetGrants())),
				Rules: claimrule.FromWire(sg.GetClaimRules()), LiveUpdate: sg.GetLiveUpdate()}
			if dispatcher.HasUnknownFields(sg) {
				// A newer manager's field may restrict who may claim
				// the service: refuse every claim rather than admit
				// what it would forbid. The grants stay (nothing is
				// mounted from them) so the rest of the message applies.
				svc.Rules = claimrule.Unreadable(ErrUnknownServiceFields)
			}
			for _, g := range sg.GetGrants() {
				if g.GetSecretId() == "" {
					return fail("change %d: service %q: grant without a secret ID", i, svc.Name)
				}
				t := g.GetTarget()
				svc.Grants = append(svc.Grants, mounter.Grant{
					SecretID:   g.GetSecretId(),
					SecretName: g.GetSecretName(),
					Target:     t.GetName(),
					UID:        t.GetUid(),
					GID:        t.GetGid(),
					Mode:       t.GetMode(),
					Signal:     g.GetSignal(),
				})
			}
			next.Services[svc.ID] = svc
		default:
			return fail("change %d: assignment names neither a secret nor a service", i)
		}
	}

	// Two services may not share a name: a claim names one.
	names := make(map[string]string, len(next.Services))
	for id, svc := range next.Services {
		if other, dup := names[svc.Name]; dup {
			return fail("services %s and %s are both named %q", other, id, svc.Name)
		}
		names[svc.Name] = id
	}

	// Keep only secrets some grant references.
	referenced := map[string]bool{}
	for _, svc := range next.Services {
		for _, g := range svc.Grants {
			referenced[g.SecretID] = true
		}
	}
	for id := range next.Secrets {
		if !referenced[id] {
			delete(next.Secrets, id)
		}
	}

	var diff Diff
	for _, s := range load {
		if s != nil && referenced[s.GetId()] {
			diff.Load = append(diff.Load, s)
		}
	}
	// Drop every held buffer that is gone or replaced by a new load.
	for id := range cur.Secrets {
		if _, kept := next.Secrets[id]; !kept {
			diff.Drop = append(diff.Drop, id)
		} else if _, reloaded := loaded[id]; reloaded {
			diff.Drop = append(diff.Drop, id)
		}
	}
	slices.Sort(diff.Drop)
	return next, diff, nil
}
