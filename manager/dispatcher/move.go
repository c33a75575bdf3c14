package dispatcher

import (
	"encoding/binary"
	"reflect"
	"slices"

	"github.com/lockbox-project/lockbox/api/types"
)

// move is what one fan-out does to a session: its new view and the changes
// from the old one. Sessions whose nodes had the same view and match the
// changed services the same way (nodes with the same placement) share one
// move, so its view, diff and queued items are computed once per distinct
// outcome, not once per node; such sessions share the new view from then
// on, which is safe because a view is never modified, only replaced.
type move struct {
	view    view
	changes []change
	// items is built outside the lock from changes, one reference each;
	// every session that queues them takes its own.
	items []item
	err   error
	built bool
}

// matchBits says, bit i, whether a node matches the i-th changed service of
// a fan-out now. Given the node's old view these bits decide its move.
type matchBits [4]uint64

// maxKeyedServices is how many changed services matchBits can describe; a
// larger batch (a big stack deploy) computes each session's move alone.
const maxKeyedServices = 64 * len(matchBits{})

// moveCache shares the moves of one fan-out. A view is found by identity
// first (sessions that shared a move share its view) and otherwise by
// content, which interns the views of sessions that connected apart.
type moveCache struct {
	byView    map[viewMatch]*move
	byContent map[contentMatch]*move
}

type viewMatch struct {
	view uintptr
	in   matchBits
}

type contentMatch struct {
	services string // the view's service objects, by identity, sorted
	in       matchBits
}

func newMoveCache() *moveCache {
	return &moveCache{byView: map[viewMatch]*move{}, byContent: map[contentMatch]*move{}}
}

// viewContent names a view's content: the identities of its service
// objects (the index replaces a service object when it changes, and diff
// compares them by identity), sorted.
func viewContent(v view) string {
	ps := make([]uint64, 0, len(v))
	for _, s := range v {
		ps = append(ps, uint64(reflect.ValueOf(s).Pointer()))
	}
	slices.Sort(ps)
	b := make([]byte, 0, 8*len(ps))
	for _, p := range ps {
		b = binary.LittleEndian.AppendUint64(b, p)
	}
	return string(b)
}

// moveOf is the move of a session whose node n is unchanged, whose agent
// announced c and whose view is old, nil when the changed services (in the
// fixed order of changed) leave it as it is. The match bits include c
// (service.placedOn): sessions of nodes with the same placement but a
// different announcement share a move only when it gives them the same
// services.
func (mc *moveCache) moveOf(old view, n *types.Node, c caps, services map[string]*service, changed []string) *move {
	var in matchBits
	touched := false
	for i, id := range changed {
		svc := services[id]
		inNew := svc != nil && svc.placedOn(n, c)
		if inNew && i < maxKeyedServices {
			in[i/64] |= 1 << (i % 64)
		}
		if prev, inOld := old[id]; !(!inNew && !inOld || inNew && prev == svc.svc) {
			touched = true
		}
	}
	if !touched {
		return nil
	}
	keyed := len(changed) <= maxKeyedServices
	var vk viewMatch
	var ck contentMatch
	if keyed {
		vk = viewMatch{view: reflect.ValueOf(old).Pointer(), in: in}
		if mv := mc.byView[vk]; mv != nil {
			return mv
		}
		ck = contentMatch{services: viewContent(old), in: in}
		if mv := mc.byContent[ck]; mv != nil {
			mc.byView[vk] = mv
			return mv
		}
	}
	nv := make(view, len(old)+1)
	for k, v := range old {
		nv[k] = v
	}
	for i, id := range changed {
		svc := services[id]
		var inNew bool
		if i < maxKeyedServices {
			inNew = in[i/64]&(1<<(i%64)) != 0
		} else {
			inNew = svc != nil && svc.placedOn(n, c)
		}
		if inNew {
			nv[id] = svc.svc
		} else {
			delete(nv, id)
		}
	}
	mv := &move{view: nv, changes: diff(old, nv)}
	if keyed {
		mc.byView[vk] = mv
		mc.byContent[ck] = mv
	}
	return mv
}

// intern returns the view with v's content that a session attached with
// since the services last changed, or keeps v as that view: nodes with the
// same placement share one view from their first message on (a reconnect
// storm builds one map per placement, not per node), and the first fan-out
// finds their shared move by identity. Node writes (every session's own
// "ready") do not reset it; a service change does, so it never keeps a
// service that is gone. d.mu must be held.
func (d *Dispatcher) intern(v view) view {
	if d.interned == nil || d.internedIx != d.ix || d.internedGen != d.ix.servicesGen {
		d.interned, d.internedIx, d.internedGen = map[string]view{}, d.ix, d.ix.servicesGen
		d.dropCompletesLocked()
	}
	k := viewContent(v)
	if w, ok := d.interned[k]; ok {
		return w
	}
	d.interned[k] = v
	return v
}
