package agent

import (
	"errors"
	"time"

	"github.com/lockbox-project/lockbox/agent/errdefs"
)

// Wipe on exit. A container's secrets must go when its last process exits,
// whatever the client does next: `nerdctl stop` and `ctr task kill` leave
// the task stopped with no runtime delete, and a release that never comes
// would leave the tmpfs to Reap (every 30 s). Every adapter (the runtime
// shim, lockbox-runtime and its hook, NRI) prepares a Linux container with
// its init process: the pid after `runc create` (shim, wrapper, NRI
// StartContainer), or the process the hook runs under (identify). That
// process later execs the container's command, keeping its pid, and the
// container lives exactly as long as it (record.alive). So the agent
// watches it (exitWatch, Linux: a pidfd per process, one epoll loop) and
// releases the container when it exits, as a release bound to that holder
// would. Reap stays as the net for what the watch cannot see: records
// without a pid (older hooks), a kernel without pidfd_open, no fd to spare.

// exitDrain is how long the agent waits, after a container's process has
// exited, before it wipes that container's secrets. The wipe overwrites the
// tmpfs pages in place, and a pipe may still hold those very pages: a
// container whose last command is `cat /run/secrets/x` has the kernel
// splice the file's pages into its stdout, and until the runtime's reader
// has drained the pipe, an overwrite would turn the output it reads into
// zeros (TestExitWipeSparesDrainingOutput). The wipe still comes well
// within the second the exit allows.
const exitDrain = 300 * time.Millisecond

// errProcessGone: the process a container was recorded for has exited, or
// its pid now names another process.
var errProcessGone = errors.New("the container's process has exited")

// errNoProcess: there is no process to watch (a record without a pid or a
// start time, a platform without an exit watch).
var errNoProcess = errors.New("no container process to watch")

// errExitWatchClosed: the watch is stopped (the agent is closing).
var errExitWatchClosed = errors.New("exit watch closed")

// startExitWatch sets up the exit watch, watches the containers recover
// found running, and runs its loop. Without a watch (an error here) the
// agent works as before it had one: Reap finds the exits.
func (a *Agent) startExitWatch() {
	if !exitWatchKnown {
		return
	}
	w, err := newExitWatch(a.exited)
	if err != nil {
		a.log.Warn("cannot watch container exits; secrets of stopped containers are wiped by the periodic reap", "err", err)
		return
	}
	a.exits = w
	// Before the loop runs, so that nothing else touches held yet.
	for id, h := range a.held {
		if err := a.watchExit(h.rec); errors.Is(err, errProcessGone) {
			// It ended between recover's look and now.
			if err := a.release(id, causeExit); err != nil {
				a.log.Warn("wipe container that ended during recovery", "container", id, "err", err)
			}
		}
	}
	w.start()
}

// stopExitWatch stops the watch; the containers stay held.
func (a *Agent) stopExitWatch() {
	if a.exits != nil {
		a.exits.close()
	}
}

// watchExit watches the process rec names. It returns errProcessGone when
// that process has already exited (or its pid was reused), and nil when it
// watches or cannot watch (Reap is then the one to notice the exit).
func (a *Agent) watchExit(rec record) error {
	if a.exits == nil {
		return nil
	}
	err := a.exits.add(rec.ID, rec.identity())
	switch {
	case err == nil, errors.Is(err, errProcessGone):
		return err
	case errors.Is(err, errNoProcess), errors.Is(err, errExitWatchClosed):
		return nil
	}
	a.log.Warn("cannot watch the container's process; its secrets are wiped by the periodic reap once it ends", "container", rec.ID, "pid", rec.Pid, "err", err)
	return nil
}

// watchPrepared watches the process of a container Prepare has just
// mounted and recorded as rec (id's lock held). If that process has ended
// already (or its pid names another process now), the container has ended
// by record.alive's rule, the one Reap and a reusing Prepare follow: it is
// wiped now rather than at the next reap, and the Prepare fails.
func (a *Agent) watchPrepared(rec record) error {
	if err := a.watchExit(rec); err == nil {
		return nil
	}
	if err := a.release(rec.ID, causeExit); err != nil {
		a.log.Warn("wipe secrets of container that ended during prepare", "container", rec.ID, "err", err)
	}
	return errdefs.Errorf(errdefs.Invalid, "container %s: its process %d ended before its secrets were ready", rec.ID, rec.Pid)
}

// unwatchExit stops watching id's process (it is being released).
func (a *Agent) unwatchExit(id string) {
	if a.exits != nil {
		a.exits.forget(id)
	}
}

// exited is the exit watch's report that who's process, watched for
// container id, has exited. After exitDrain it releases id as a release
// bound to that holder would: only if the agent still holds id for that
// very process (not released meanwhile, nor replaced by a new container
// reusing the ID). A release that comes first (the runtime's delete,
// usually) stops it.
func (a *Agent) exited(id string, who identity) {
	t := time.AfterFunc(exitDrain, func() { a.releaseExited(id, who) })
	a.mu.Lock()
	defer a.mu.Unlock()
	if h := a.held[id]; h != nil && h.rec.identity().same(who) {
		h.drain = t
	} else {
		t.Stop() // released already: nothing to drain
	}
}

// releaseExited is exited's release, once the container's output drained.
func (a *Agent) releaseExited(id string, who identity) {
	if a.closed.Load() {
		return // the containers stay held for the next agent to recover
	}
	h, unlock := a.lockHeld(id)
	defer unlock()
	if h == nil || !h.rec.identity().same(who) {
		return
	}
	if err := a.release(id, causeExit); err != nil {
		// The record stays: Reap retries.
		a.log.Warn("wipe secrets of exited container", "container", id, "err", err)
		return
	}
	a.log.Info("container's process exited; secrets wiped", "container", id, "pid", who.Pid)
}
