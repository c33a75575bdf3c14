package agent

import (
	"context"

	"github.com/lockbox-project/lockbox/agent/errdefs"
	api "github.com/lockbox-project/lockbox/api/agent"
)

// Bind names the process of a container prepared before its create
// (api/agent BindRequest): the runtime shim asks the agent to build and
// hand over a claim's secrets beside runc's create, attaches them itself
// once the container exists, and then binds the container to its init.
// The agent records that process and watches it, as it does for a
// container prepared with its pid: from the answer on, the container's
// exit wipes its secrets, and a container reusing its ID is told from it.
//
// Only a container held with nothing known of it can be bound. One bound
// (or prepared) for this very process answers yes again; one known to be
// another process is refused, and so is a process in the agent's own
// mount namespace, which is no container's.
func (a *Agent) Bind(ctx context.Context, req *api.BindRequest) error {
	id, pid := req.GetContainerId(), int(req.GetPid())
	if !validContainerID(id) {
		return errdefs.Errorf(errdefs.Invalid, "container id %q: not a container ID", id)
	}
	if pid <= 0 {
		return errdefs.Errorf(errdefs.Invalid, "container %s: pid %d is not a process", id, pid)
	}
	h, unlock := a.lockHeld(id)
	defer unlock()
	if h == nil {
		return errdefs.Errorf(errdefs.NotFound, "container %s: the agent holds no secrets for it (released, or never prepared)", id)
	}
	if !livenessKnown {
		// Nothing to know a process by on this platform (no before-create
		// Prepare either: the Windows local API refuses it).
		return nil
	}
	who, err := processIdentity(id, pid)
	if err != nil {
		return err
	}
	if who.MntNS == a.selfNS {
		return errdefs.Errorf(errdefs.Invalid, "container %s: pid %d shares the agent's mount namespace: it is no container's process", id, pid)
	}
	if held := h.rec.identity(); held.known() {
		if held.same(who) {
			return nil
		}
		return errdefs.Errorf(errdefs.Invalid, "container %s is held for another process than pid %d", id, pid)
	}
	rec := h.rec
	rec.Pid, rec.PidStart, rec.MntNS = who.Pid, who.PidStart, who.MntNS
	rec.PreStartExe = exeID(who.Pid)
	// The container's first record (a pending one has none): from here
	// on a restarted agent takes it back as any other.
	if err := a.records.put(rec); err != nil {
		return err
	}
	trace.Mark(id, "agent-bound")
	a.mu.Lock()
	h.rec = rec
	h.pending = false
	a.mu.Unlock()
	// A process that ended already is the container ended: wiped now, and
	// the caller's start fails.
	if err := a.watchPrepared(rec); err != nil {
		return err
	}
	trace.Mark(id, "agent-bound-watched")
	a.log.Debug("container bound to its process", "container", id, "pid", who.Pid)
	return nil
}
