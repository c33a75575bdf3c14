package dispatcher

import (
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/constraint"
	"github.com/lockbox-project/lockbox/manager/store"
)

// service is a service with its constraints parsed once.
type service struct {
	svc *types.Service
	// cons is nil when the placement does not parse: such a service is
	// placed on no node (fail closed). The admin API refuses those, so this
	// is only for data written around it.
	cons  []constraint.Constraint
	valid bool
}

func newService(s *types.Service) *service {
	cons, err := constraint.ParseAll(s.GetSpec().GetPlacement().GetConstraints())
	return &service{svc: s, cons: cons, valid: err == nil}
}

func (s *service) matches(n *types.Node) bool {
	return s.valid && constraint.Match(s.cons, n)
}

// placedOn reports whether s goes to the session of node n whose agent
// announced c: its placement matches the node, and the agent enforces
// what s needs (caps.servable, features.go).
func (s *service) placedOn(n *types.Node, c caps) bool {
	return c.servable(s.svc) && s.matches(n)
}

// index is every service and node at revision rev. Objects in it are never
// modified: a change replaces the pointer, so views can hold pointers and
// compare them.
type index struct {
	rev      int64
	services map[string]*service
	nodes    map[string]*types.Node
	// servicesGen counts the service changes applied: views interned at
	// one value hold no service that is gone (Dispatcher.intern).
	servicesGen int64
}

func newIndex(snap *store.Snapshot) *index {
	ix := &index{
		rev:      snap.Revision,
		services: make(map[string]*service, len(snap.Services)),
		nodes:    make(map[string]*types.Node, len(snap.Nodes)),
	}
	for _, s := range snap.Services {
		ix.services[s.Id] = newService(s)
	}
	for _, n := range snap.Nodes {
		ix.nodes[n.Id] = n
	}
	return ix
}

// delta is what a batch changed.
type delta struct {
	services map[string]bool // changed or removed service IDs
	nodes    map[string]bool // changed or removed node IDs
}

func (d *delta) empty() bool { return len(d.services) == 0 && len(d.nodes) == 0 }

// apply folds a batch into the index and records what it touched.
func (ix *index) apply(b store.Batch, d *delta) {
	for _, ev := range b.Events {
		switch ev.Kind {
		case store.KindService:
			if ev.Deleted {
				delete(ix.services, ev.ID)
			} else {
				ix.services[ev.ID] = newService(ev.Service)
			}
			d.services[ev.ID] = true
			ix.servicesGen++
		case store.KindNode:
			if ev.Deleted {
				delete(ix.nodes, ev.ID)
			} else {
				old := ix.nodes[ev.ID]
				ix.nodes[ev.ID] = ev.Node
				// Status and last-seen writes do not move grants: only
				// what constraints can see counts as a change.
				if old != nil && samePlacementInputs(old, ev.Node) {
					continue
				}
			}
			d.nodes[ev.ID] = true
		}
		// Secrets: data is immutable and a referenced secret cannot be
		// removed, so secret events never move grants.
	}
	if b.Revision > ix.rev {
		ix.rev = b.Revision
	}
}

// samePlacementInputs reports whether two versions of a node look the same
// to every constraint.
func samePlacementInputs(a, b *types.Node) bool {
	if a.GetRole() != b.GetRole() ||
		a.GetDescription().GetHostname() != b.GetDescription().GetHostname() ||
		a.GetDescription().GetPlatform().GetOs() != b.GetDescription().GetPlatform().GetOs() ||
		a.GetDescription().GetPlatform().GetArchitecture() != b.GetDescription().GetPlatform().GetArchitecture() {
		return false
	}
	la, lb := a.GetSpec().GetLabels(), b.GetSpec().GetLabels()
	if len(la) != len(lb) {
		return false
	}
	for k, v := range la {
		if w, ok := lb[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// view is the services placed on one node, by ID.
type view map[string]*types.Service

// viewOf computes from scratch the view of node n's session, whose agent
// announced c.
func viewOf(services map[string]*service, n *types.Node, c caps) view {
	v := view{}
	for id, s := range services {
		if s.placedOn(n, c) {
			v[id] = s.svc
		}
	}
	return v
}

// secretIDs is the set of secrets a view references.
func (v view) secretIDs() map[string]string {
	out := map[string]string{}
	for _, s := range v {
		for _, ref := range s.GetSpec().GetSecrets() {
			out[ref.GetSecretId()] = ref.GetSecretName()
		}
	}
	return out
}

// change is one step of moving a node from one view to another. For a
// secret update, the data is filled in later (it needs a store read).
type change struct {
	remove   bool
	service  *types.Service // service update or removal (ID only)
	secretID string         // secret update or removal
	name     string
}

// diff lists the steps from old to new: secrets a service will need first,
// then services, then what is gone. Services are compared by pointer (the
// index replaces a service when it changes) and then by version, for views
// read from history.
func diff(old, new view) []change {
	var out []change
	oldSecrets, newSecrets := old.secretIDs(), new.secretIDs()
	for id, name := range newSecrets {
		if _, ok := oldSecrets[id]; !ok {
			out = append(out, change{secretID: id, name: name})
		}
	}
	for id, s := range new {
		if o := old[id]; o != s && (o == nil || o.GetMeta().GetVersion() != s.GetMeta().GetVersion()) {
			out = append(out, change{service: s})
		}
	}
	for id, s := range old {
		if _, ok := new[id]; !ok {
			out = append(out, change{remove: true, service: s})
		}
	}
	for id, name := range oldSecrets {
		if _, ok := newSecrets[id]; !ok {
			out = append(out, change{remove: true, secretID: id, name: name})
		}
	}
	return out
}
