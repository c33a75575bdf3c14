package agent

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/lockbox-project/lockbox/agent/errdefs"
	"github.com/lockbox-project/lockbox/agent/localapi"
	api "github.com/lockbox-project/lockbox/api/agent"
)

// Release is ReleaseRequest from a caller that names no process (a caller
// in this process: the NRI plugin of `lockbox agent --nri`).
func (a *Agent) Release(ctx context.Context, id string) error {
	return a.ReleaseRequest(ctx, &api.ReleaseRequest{ContainerId: id})
}

// ReleaseRequest wipes a container's mount and forgets it. Releasing an
// unknown container succeeds: a poststop hook and a runtime delete may
// both ask.
//
// A container ID is unique only within a containerd namespace, and the
// agent holds one container per ID (a second one is refused at Prepare).
// So that the delete of another namespace's container with the same ID
// cannot wipe the holder's secrets while it runs, a release of a running
// holder wipes only when it shows it comes from that container: it names
// the holder's process (the runtime wrapper, from runc's state), or it is
// sent from inside the holder's mount namespace (its OCI hook). Any other
// release of a running holder succeeds and leaves it alone: the caller's
// container holds nothing here. Once the holder has ended (how every
// ordinary release comes: runc delete, poststop, NRI StopContainer), any
// release wipes it, as does Reap or a Prepare that reuses the ID.
func (a *Agent) ReleaseRequest(ctx context.Context, req *api.ReleaseRequest) error {
	id := req.GetContainerId()
	if !validContainerID(id) {
		return errdefs.Errorf(errdefs.Invalid, "container id %q: not a container ID", id)
	}
	if req.GetPid() < 0 {
		return errdefs.Errorf(errdefs.Invalid, "container %s: pid %d is not a process", id, req.GetPid())
	}
	trace.Mark(id, "agent-release")
	defer trace.Mark(id, "agent-released")
	h, unlock := a.lockHeld(id)
	if h != nil {
		if pid, runs := a.holderRuns(h); runs && !h.rec.identity().same(a.releaser(ctx, req)) {
			unlock()
			a.log.Warn("release of a container ID held by another running container; left alone", "container", id, "holder_pid", pid, "release_pid", req.GetPid())
			return nil
		}
		if h.mount != nil && processExited(h.rec.identity()) && a.wiping.start() {
			// The wiper owns the container's lock from here.
			go a.releaseAfterReply(id, unlock)
			return nil
		}
	}
	defer unlock()
	return a.release(id, causeRelease)
}

// Release after the reply. A release is on the delete path of every
// claiming container (the shim's Delete answers containerd only after it),
// and the wipe is most of its cost (BenchmarkShimPhases,
// docs/performance.md). Once the holder's process has exited (a pidfd says
// so, processExited), nothing can read the secrets any more but whoever
// still holds their pages, so the caller need not wait for the overwrite:
// ReleaseRequest answers while a goroutine that holds the container's lock
// (taken before the answer, kept until the wipe is done) wipes. Holding
// the lock across the answer is what keeps the guarantees of the
// synchronous release: a Prepare reusing the ID, an attach, a live update,
// the exit watch or Reap all wait for the wipe and then find the container
// gone, as they would have after a synchronous release. The record is
// removed only after the wipe (release): an agent killed in between leaves
// it, and the next agent's recovery finds a container that has ended (its
// tmpfs went with the killed agent's fds, the only reference left) and
// forgets it. A holder that still runs, or whose exit cannot be told (no
// pid in its record, no pidfd here), is wiped before the answer, as
// before.
//
// No exitDrain here, as there never was for a synchronous release:
// answering first only moves the wipe later. The release this is for, the
// shim's at Delete, comes after the container's output is drained: it
// follows the runc shim's delete, which waits (up to 10 s) for its copies of
// the container's stdio pipes to reach EOF before it deletes
// (containerd v2.4.2 cmd/containerd-shim-runc-v2/process/init.go,
// Init.delete: waitTimeout(ctx, &p.wg, ...); process/io.go copyPipes:
// wg.Done after io.CopyBuffer returns), and containerd's client drains the
// task's IO before it asks for the delete (client/task.go, task.Delete:
// t.io.Wait()). Answering first only moves the wipe later.
func (a *Agent) releaseAfterReply(id string, unlock func()) {
	defer a.wiping.done()
	defer unlock()
	if a.wiping.hook != nil {
		a.wiping.hook(id)
	}
	if err := a.release(id, causeRelease); err != nil {
		// The record and the mount stay: Reap retries (the container has
		// ended), as would a Prepare reusing the ID.
		a.log.Warn("wipe secrets after release", "container", id, "err", err)
	}
}

// asyncWipes tracks the wipes that run after their release has answered,
// so that Close lets them finish rather than close the mounts under them.
// A count under a mutex, not a WaitGroup: a wait may come from a goroutine
// the starter is ordered with only through a socket (a test waiting after
// the local API's answer), which the race detector cannot see.
type asyncWipes struct {
	mu     sync.Mutex
	idle   *sync.Cond // on mu; made at first use
	n      int
	closed bool
	// hook, if set (tests), runs in each wiper before it wipes: the
	// window between the answer and the wipe.
	hook func(id string)
}

// start counts a wipe to come; false once closing (release synchronously).
func (w *asyncWipes) start() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	w.n++
	return true
}

func (w *asyncWipes) done() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n--
	if w.n == 0 && w.idle != nil {
		w.idle.Broadcast()
	}
}

func (w *asyncWipes) waitLocked() {
	for w.n > 0 {
		if w.idle == nil {
			w.idle = sync.NewCond(&w.mu)
		}
		w.idle.Wait()
	}
}

// close waits for the wipes under way; later releases are synchronous.
func (w *asyncWipes) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	w.waitLocked()
}

// holderRuns reports whether the container h was recorded for provably
// still runs, with one of its processes (0 if unknown). A record that
// names neither a process nor a namespace, or a platform without /proc,
// cannot tell: such a holder is not taken to run (releases behave as
// before the agent knew containers).
func (a *Agent) holderRuns(h *held) (int, bool) {
	if !livenessKnown || !h.rec.identity().known() {
		return 0, false
	}
	var live map[uint64]int
	if h.rec.needsNamespaces() {
		live = liveNamespaces()
	}
	return h.rec.alive(live)
}

// releaser identifies the container a release comes from, as far as the
// agent can tell: the mount namespace of a caller inside a container (its
// OCI hook; a pid it names is ignored, numbered in a pid namespace the
// agent does not see), else the process the request names, else nothing.
//
// A release that asks for no answer (no_reply: the shim's at Delete) is
// never taken to come from inside a container. Its caller may have closed
// the connection and exited before the agent reads the request, and the
// peer's pid is the one SO_PEERCRED took at connect: /proc/<pid>/ns/mnt
// read now may belong to whatever process has the pid since, possibly one
// inside the running holder of the same ID (another namespace's
// container), whose namespace would let the release wipe that holder. So
// such a release is judged by what it carries alone: the process it names
// (whose start time is checked as in any release) or nothing, and nothing
// wipes only a holder that has ended. Any other release (and a Prepare's
// claim checks, identify) reads the caller's /proc and then asks the
// caller's pidfd, taken at accept, whether it still runs (Peer.Alive): a
// caller killed mid-request may have left its pid to another process. The
// shim's release names no process and comes after runc's delete: the
// holder has ended, and the release wipes it as before.
func (a *Agent) releaser(ctx context.Context, req *api.ReleaseRequest) identity {
	if p, ok := localapi.PeerFromContext(ctx); ok && p.Pid > 0 && !req.GetNoReply() {
		// Alive after the read: the namespace was the caller's only if
		// the caller still runs (see identify).
		if ns, err := mntNS(strconv.Itoa(int(p.Pid))); err == nil && ns != 0 && ns != a.selfNS && p.Alive() == nil {
			return identity{MntNS: ns}
		}
	}
	pid := int(req.GetPid())
	if pid <= 0 {
		return identity{}
	}
	start := req.GetPidStart()
	if start == 0 {
		// The caller did not know it: the process's now. A process that
		// has gone gets none, and so matches no running holder.
		start, _ = pidStart(pid)
	}
	return identity{Pid: pid, PidStart: start}
}

// releaseCause is why the agent released a container it held.
type releaseCause int

const (
	// causeRelease: a release from an adapter (runtime delete, poststop
	// hook, NRI stop).
	causeRelease releaseCause = iota
	// causeExit: the exit watch saw the container's process exit.
	causeExit
	// causeReap: Reap found the container ended.
	causeReap
	// causeReuse: a Prepare reused the ID of an ended container.
	causeReuse
	numCauses
)

// ReleaseCounts is how many held containers the agent has released, by
// cause, since it started.
type ReleaseCounts struct {
	Release, Exit, Reap, Reuse uint64
}

// ReleaseCounts returns how many held containers the agent has released,
// by cause.
func (a *Agent) ReleaseCounts() ReleaseCounts {
	return ReleaseCounts{
		Release: a.released[causeRelease].Load(),
		Exit:    a.released[causeExit].Load(),
		Reap:    a.released[causeReap].Load(),
		Reuse:   a.released[causeReuse].Load(),
	}
}

// release is Release with the container's lock held; cause is counted when
// the agent held id.
func (a *Agent) release(id string, cause releaseCause) error {
	a.mu.Lock()
	h := a.held[id]
	a.mu.Unlock()
	var wipeErr error
	if h != nil && h.mount != nil {
		wipeErr = h.mount.Wipe()
		if wipeErr != nil {
			// Keep the record and the mount: a later Release retries.
			return fmt.Errorf("container %s: wipe secrets: %w", id, wipeErr)
		}
	}
	if err := a.records.remove(id); err != nil {
		return err
	}
	a.mu.Lock()
	delete(a.held, id)
	if h != nil && h.drain != nil {
		// An exit's release waiting for the output to drain has nothing
		// left to do.
		h.drain.Stop()
	}
	a.mu.Unlock()
	a.unwatchExit(id)
	if h != nil {
		a.released[cause].Add(1)
		a.log.Info("secrets released", "container", id, "service", h.rec.Service, "recovered", h.mount == nil)
		a.reportWiped(id, h.rec.Service)
	}
	return nil
}

// Reap releases every held container whose processes are all gone. A
// container normally leaves through Release (runtime delete, poststop hook,
// NRI stop), but that call can be lost: containerd or the shim killed, a
// hook that could not reach a restarting agent, a container still dying
// when the agent restarted. Without Reap its tmpfs would stay in the
// agent's hands until the agent exits. It returns how many it released.
func (a *Agent) Reap(ctx context.Context) int {
	if !livenessKnown {
		return 0
	}
	a.mu.Lock()
	ids := make([]string, 0, len(a.held))
	byNamespace := false
	for id, h := range a.held {
		ids = append(ids, id)
		byNamespace = byNamespace || h.rec.needsNamespaces()
	}
	a.mu.Unlock()
	if len(ids) == 0 {
		return 0
	}
	// Scanning every process's namespace costs far more than reading one
	// pid's stat: only for records that have no pid.
	var live map[uint64]int
	if byNamespace {
		live = liveNamespaces()
	}
	n := 0
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		if a.reapOne(id, live) {
			n++
		}
	}
	return n
}

func (a *Agent) reapOne(id string, live map[uint64]int) bool {
	h, unlock := a.lockHeld(id)
	defer unlock()
	// A record that names neither a process nor a namespace cannot be
	// judged: leave it to an explicit Release.
	if h == nil || !h.rec.identity().known() {
		return false
	}
	if h.rec.needsNamespaces() && live == nil {
		// Held since Reap listed the containers.
		return false
	}
	if _, ok := h.rec.alive(live); ok {
		return false
	}
	if err := a.release(id, causeReap); err != nil {
		a.log.Warn("reap finished container", "container", id, "err", err)
		return false
	}
	a.log.Info("reaped container that ended without a release", "container", id)
	return true
}
