//go:build linux

package shim

import (
	"context"
	"fmt"

	"github.com/lockbox-project/lockbox/plugin/claimrecord"
	"github.com/lockbox-project/lockbox/plugin/runtime/agentconn"
)

// readyRelease is a release made ready to send: the claim recorded in a
// bundle, read, and a connection to the agent.
type readyRelease struct {
	rec *claimrecord.Record
	cl  *agentconn.Conn
}

// readyFromDisk reads the claim recorded in bundle and dials the agent. It
// returns nil and no error when there is nothing to release (no bundle, no
// record: the container claimed nothing or was released already).
func readyFromDisk(ctx context.Context, socket, bundle string) (*readyRelease, error) {
	if bundle == "" {
		return nil, nil
	}
	rec, err := claimrecord.Read(bundle)
	if err != nil || rec == nil {
		return nil, err
	}
	cl, err := agentconn.Dial(socket, callTimeout(ctx))
	if err != nil {
		return nil, fmt.Errorf("release %s: lockbox agent not reachable: %w", rec.ID, err)
	}
	return &readyRelease{rec: rec, cl: cl}, nil
}

// send has the agent release the recorded container and removes the
// record once it has (a record that stays is released again by the shim
// manager's Stop: releasing is idempotent). It closes the connection.
func (r *readyRelease) send(bundle string) error {
	defer r.cl.Close()
	if err := r.cl.Release(r.rec.ID, agentconn.Process{Pid: int(r.rec.Pid), Start: r.rec.PidStart}); err != nil {
		return fmt.Errorf("release %s: %w", r.rec.ID, err)
	}
	return claimrecord.Remove(bundle)
}

// post sends the release without waiting for the agent's answer (the
// agent reads a request written before the close: SOCK_SEQPACKET) and
// removes the record once the request is written. It closes the
// connection. A dial or a write that fails leaves the record for the shim
// manager's Stop.
//
// The wipe does not hang on this release: the agent's record of the
// container, its exit watch (a wipe within exitDrain of the init's exit)
// and its restart recovery guarantee it; the release only makes it
// prompt. An agent that dies after reading the request but before wiping
// leaves its record, and the next agent's recovery forgets a container
// that has ended (its tmpfs went with the dead agent's fds). What the
// caller gives up is the outcome, so only the Delete posts: the manager's
// Stop and a failed claim's take-back wait for the answer (send).
func (r *readyRelease) post(bundle string, mark func(step string)) error {
	defer r.cl.Close()
	if err := r.cl.SendRelease(r.rec.ID, agentconn.Process{Pid: int(r.rec.Pid), Start: r.rec.PidStart}); err != nil {
		return fmt.Errorf("release %s: %w", r.rec.ID, err)
	}
	if mark != nil {
		mark("release-sent")
	}
	return claimrecord.Remove(bundle)
}

// releaseFromDisk releases the container recorded in bundle, if any, and
// removes the record once the agent has released it. Releasing is
// idempotent: an agent that holds nothing for the ID answers yes.
func releaseFromDisk(ctx context.Context, socket, bundle string) error {
	r, err := readyFromDisk(ctx, socket, bundle)
	if err != nil || r == nil {
		return err
	}
	return r.send(bundle)
}

// earlyRelease is the Delete's release made ready beside runc's delete
// (readyFromDisk in a goroutine), so that after runc's delete only the
// Release round trip is left on the delete's path: the record's read and
// the agent's dial and accept (about 0.7 ms of the 1.3–2 ms release,
// BenchmarkShimPhases) overlap runc's delete, a separate runc process of
// 10–15 ms. Nothing is released before runc's delete has succeeded: the
// container's output is drained only then (see Delete), and a delete that
// fails leaves the container as it was.
type earlyRelease struct {
	done   chan struct{}
	bundle string
	r      *readyRelease
	err    error
}

func startRelease(ctx context.Context, socket, bundle string) *earlyRelease {
	e := &earlyRelease{done: make(chan struct{}), bundle: bundle}
	go func() {
		defer close(e.done)
		e.r, e.err = readyFromDisk(ctx, socket, bundle)
	}()
	return e
}

// finish posts the release made ready: it returns once the agent has the
// request, not its answer (post). mark, if set, is the phase trace's.
func (e *earlyRelease) finish(mark func(step string)) error {
	<-e.done
	if mark != nil {
		mark("release-ready")
	}
	if e.err != nil || e.r == nil {
		return e.err
	}
	return e.r.post(e.bundle, mark)
}

// abandon drops the release made ready (runc's delete failed, or the
// delete was an exec's): nothing is released.
func (e *earlyRelease) abandon() {
	<-e.done
	if e.r != nil {
		e.r.cl.Close()
	}
}
