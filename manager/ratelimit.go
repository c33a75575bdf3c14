package manager

import (
	"context"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Calls anyone may make (no certificate) cost the manager a CSR check, a
// token comparison and etcd writes: they are rate-limited per peer address
// (the IP, whatever the port), so one host cannot starve the others.
var rateLimited = map[string]bool{
	"/lockbox.ca.NodeCA/GetRootCACertificate": true,
	"/lockbox.ca.NodeCA/IssueNodeCertificate": true,
}

const (
	// DefaultUnauthRate and DefaultUnauthBurst: a host joins up to 100
	// nodes at once, then 20 a second (a fleet behind one NAT address
	// still joins a thousand nodes in under a minute).
	DefaultUnauthRate  = rate.Limit(20)
	DefaultUnauthBurst = 100
	// peerIdle is how long an address's bucket is kept unused; the map
	// is swept when it grows past peerSweepAt entries.
	peerIdle    = 10 * time.Minute
	peerSweepAt = 4096
)

type peerLimiter struct {
	limit rate.Limit
	burst int
	now   func() time.Time

	mu    sync.Mutex
	peers map[string]*peerBucket
}

type peerBucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newPeerLimiter(limit rate.Limit, burst int) *peerLimiter {
	if limit == 0 {
		limit = DefaultUnauthRate
	}
	if burst == 0 {
		burst = DefaultUnauthBurst
	}
	return &peerLimiter{limit: limit, burst: burst, now: time.Now, peers: map[string]*peerBucket{}}
}

// allow takes one token from the bucket of addr's host.
func (p *peerLimiter) allow(addr net.Addr) bool {
	host := "unknown"
	if addr != nil {
		host = addr.String()
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.peers[host]
	if b == nil {
		if len(p.peers) >= peerSweepAt {
			for h, old := range p.peers {
				if now.Sub(old.seen) > peerIdle {
					delete(p.peers, h)
				}
			}
		}
		b = &peerBucket{lim: rate.NewLimiter(p.limit, p.burst)}
		p.peers[host] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1)
}

// unary refuses rate-limited calls beyond the caller's budget.
func (p *peerLimiter) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if rateLimited[info.FullMethod] {
		var addr net.Addr
		if pr, ok := peer.FromContext(ctx); ok {
			addr = pr.Addr
		}
		if !p.allow(addr) {
			return nil, status.Error(codes.ResourceExhausted, "too many certificate requests from this address: retry later")
		}
	}
	return handler(ctx, req)
}
