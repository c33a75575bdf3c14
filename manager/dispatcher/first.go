package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"
)

// A reconnect storm attaches thousands of sessions within seconds, and
// nodes with the same placement attach with one interned view (intern,
// move.go). Their COMPLETE messages carry the same changes: the secret
// reads and unseals, and the encoding of every change, are done once per
// view and shared, as a fan-out shares its changes, instead of once per
// session (docs/performance.md, "Reconnect storm").
//
// What is shared is exactly what a session would have built alone: a
// session takes a complete set only for the interned view it was given
// under d.mu from the index, so no node is sent another placement's grants.
// The set lives while it is in use: it is dropped (its secret bytes zeroed
// by zeroOnFree once the last session has sent them) when no attach has
// asked for it for completeTTL, and at once when the services change
// (the interned views are replaced then). Secret data never changes under
// its ID and a referenced secret cannot be removed (index.apply), so a set
// never goes stale while its view is current.

// completeTTL is how long an unused complete set is kept. Long enough to
// span the gaps between attaches of one storm; short, because it holds
// secret data that no session may need again.
const completeTTL = time.Second

// completeBuildTimeout bounds the store reads of a shared build.
const completeBuildTimeout = 10 * time.Second

// completeSet is the shared changes of a COMPLETE message for one
// interned view.
type completeSet struct {
	// view is the interned view the set is for; holding it keeps its
	// address (the cache key) from being reused by another view.
	view view
	// done is closed once items or err is set, by the attach that builds
	// the set; others wait for it.
	done  chan struct{}
	items []item // one reference each, the set's own; guarded by d.mu once done
	err   error
	// Guarded by d.mu.
	lastUse time.Time
	dropped bool
}

// viewKey identifies an interned view (move.go's viewMatch does the same).
func viewKey(v view) uintptr { return reflect.ValueOf(v).Pointer() }

// completeFor returns the items of a COMPLETE message for cur (the interned
// view the session attached with), each with one reference that is the
// caller's. It builds them once for all sessions that attach with cur.
func (d *Dispatcher) completeFor(ctx context.Context, cur view) ([]item, error) {
	k := viewKey(cur)
	d.mu.Lock()
	set, ok := d.completes[k]
	if !ok {
		if d.completes == nil {
			d.completes = map[uintptr]*completeSet{}
		}
		set = &completeSet{view: cur, done: make(chan struct{}), lastUse: time.Now()}
		d.completes[k] = set
		d.mu.Unlock()
		return d.buildComplete(ctx, cur, set)
	}
	set.lastUse = time.Now()
	d.mu.Unlock()
	select {
	case <-set.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	d.mu.Lock()
	if set.err == nil && !set.dropped {
		out := refItems(set.items)
		d.mu.Unlock()
		return out, nil
	}
	d.mu.Unlock()
	// The builder failed (its session reports why) or the set is gone:
	// build this session's own.
	return d.readComplete(ctx, cur)
}

// buildComplete builds set for cur, publishes it and returns the caller's
// references.
func (d *Dispatcher) buildComplete(ctx context.Context, cur view, set *completeSet) ([]item, error) {
	// Others wait for this build: the agent that started it hanging up
	// must not fail theirs.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), completeBuildTimeout)
	items, err := d.readComplete(bctx, cur)
	cancel()
	d.mu.Lock()
	defer d.mu.Unlock()
	defer close(set.done)
	if err != nil {
		set.err = err
		d.forgetCompleteLocked(viewKey(cur), set)
		return nil, err
	}
	if set.dropped {
		// Dropped while it was built (services changed): the caller's
		// view was current when it attached, so its message stands, but
		// nobody else may take it.
		set.err = errStaleComplete
		return items, nil
	}
	set.items = refItems(items)
	time.AfterFunc(d.completeTTL, func() { d.expireComplete(viewKey(cur), set) })
	return items, nil
}

// readComplete reads and encodes a COMPLETE message's changes for v.
func (d *Dispatcher) readComplete(ctx context.Context, v view) ([]item, error) {
	return d.readChanges(ctx, diff(view{}, v))
}

// expireComplete drops set once it has been unused for completeTTL.
func (d *Dispatcher) expireComplete(k uintptr, set *completeSet) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if set.dropped {
		return
	}
	if idle := time.Since(set.lastUse); idle < d.completeTTL {
		time.AfterFunc(d.completeTTL-idle, func() { d.expireComplete(k, set) })
		return
	}
	d.forgetCompleteLocked(k, set)
	set.drop()
}

// forgetCompleteLocked removes set from the cache if it is still there.
func (d *Dispatcher) forgetCompleteLocked(k uintptr, set *completeSet) {
	if d.completes[k] == set {
		delete(d.completes, k)
	}
}

// dropCompletesLocked releases every cached set; d.mu must be held. The
// services changed: no session attaches with those views again.
func (d *Dispatcher) dropCompletesLocked() {
	for k, set := range d.completes {
		delete(d.completes, k)
		set.drop()
	}
}

// drop releases the set's references; d.mu must be held. Sessions that
// took their own keep the encodings alive until sent.
func (set *completeSet) drop() {
	set.dropped = true
	for _, it := range set.items {
		it.release()
	}
	set.items = nil
}

// errStaleComplete marks a set dropped while it was built: others build
// their own.
var errStaleComplete = errors.New("complete set dropped while built")

// secretReadError is a secret that could not be read for a first message.
type secretReadError struct {
	id  string
	err error
}

func (e *secretReadError) Error() string { return fmt.Sprintf("read secret %s: %v", e.id, e.err) }

func (e *secretReadError) Unwrap() error { return e.err }

// refItems returns items with one more reference each, for the caller.
func refItems(items []item) []item {
	out := make([]item, len(items))
	for i, it := range items {
		it.change.Ref()
		out[i] = it
	}
	return out
}
