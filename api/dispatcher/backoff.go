package dispatcher

import (
	"math/rand/v2"
	"time"
)

// Backoff is how an agent paces its attempts to reach a manager. It lives
// here, beside Transport, because the manager's reconnect-storm benchmark
// reconnects its simulated agents with it: what it measures is what
// agents do.
//
// After a session that delivered, the next attempt comes quickly (Min);
// each failed attempt doubles the wait up to Max, with full jitter (the
// wait is drawn from [w/2, 3w/2)), so a fleet that lost the same manager
// does not come back in step.
//
// Attempts that reached no manager at all (the TCP connection refused or
// failed: nothing listens there) back off on their own, up to
// MaxUnreached. Such an attempt costs a manager nothing, and a manager
// host that is down makes each attempt wait for the connect timeout
// anyway; backing off to Max against it would only leave agents asleep
// for up to 1.5 × Max after their manager is back (docs/performance.md,
// "Reconnect storm"). Attempts that reached a manager and failed (a
// handshake, an overloaded or refusing manager) cost it work: those
// back off all the way to Max, counted from the first of them, not from
// the start of the outage.
type Backoff struct {
	// Min, Max and MaxUnreached default to 100 ms, 10 s and 1 s.
	Min, Max, MaxUnreached time.Duration

	reached, unreached time.Duration // the next base waits
}

// Next returns how long to wait before the next attempt, given whether
// the last one delivered a message and whether it reached a manager.
func (b *Backoff) Next(delivered, reached bool) time.Duration {
	minB, maxB, maxU := b.Min, b.Max, b.MaxUnreached
	if minB <= 0 {
		minB = 100 * time.Millisecond
	}
	if maxB < minB {
		maxB = max(10*time.Second, minB)
	}
	if maxU <= 0 {
		maxU = time.Second
	}
	maxU = max(maxU, minB)
	if delivered {
		b.reached, b.unreached = 0, 0
	}
	cur, ceiling := &b.reached, maxB
	if !reached {
		cur, ceiling = &b.unreached, maxU
	}
	if *cur == 0 {
		*cur = minB
	}
	w := *cur
	*cur = min(*cur*2, ceiling)
	return time.Duration(rand.Int64N(int64(w))) + w/2
}
