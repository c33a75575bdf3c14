package dispatcher

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// SessionWindow is the fixed HTTP/2 flow-control window (per stream and per
// connection) an agent grants its manager: larger than the largest secret
// (< 500 KiB) with its framing, so a change carrying one is never held back
// waiting for a window update.
const SessionWindow = 1 << 20

// Transport is how an agent's connection to a manager is set up at the
// gRPC level. The zero value is what agents use.
//
// It lives here, beside the Session API, because both sides need it: the
// agent (agent/session) dials with it, and the manager's benchmarks dial
// their simulated agents with it so that what they measure is how real
// agents connect; the manager must not import agent/.
type Transport struct {
	// AdaptiveWindow leaves gRPC's default flow control on: a 64 KiB
	// window grown by bandwidth-delay-product estimation. Agents do not
	// use it; it is kept so benchmarks can compare both in one run.
	AdaptiveWindow bool
}

// DialOptions returns the transport options of a connection that carries
// a Session stream; callers add credentials and anything of their own.
func (t Transport) DialOptions() []grpc.DialOption {
	opts := []grpc.DialOption{
		// A manager that vanishes without closing the connection is
		// noticed within about 15 s. The manager permits pings every 5 s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	}
	if !t.AdaptiveWindow {
		// A fixed window turns BDP estimation off. With it on, the first
		// data of every burst the manager sends is answered by a ping
		// the manager must read and acknowledge: on a fan-out to
		// thousands of agents that was about 45% of the manager's CPU
		// (docs/performance.md). Session traffic is bursts of small
		// messages, nothing a growing window would speed up. The window
		// is credit, not a buffer: neither side allocates it up front.
		opts = append(opts,
			grpc.WithInitialWindowSize(SessionWindow),
			grpc.WithInitialConnWindowSize(SessionWindow))
	}
	return opts
}
