package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/lockbox-project/lockbox/manager/store"
	"github.com/lockbox-project/lockbox/pki"
)

// Revocations: the set of revoked node IDs (every manager follows it from
// the store and refuses those nodes), the serial of every certificate
// issued to a node, and the CRL built from them for etcd's peer port.

// maxCRLRetries bounds the rebuilds of the CRL while other managers
// revoke at the same time.
const maxCRLRetries = 10

// record notes a certificate issued to nodeID in the store; a revoked
// node gets ErrRevoked.
func (c *CA) record(ctx context.Context, nodeID string, cert *x509.Certificate) error {
	err := c.st.RecordCertificate(ctx, nodeID, store.IssuedCert{
		Serial:   cert.SerialNumber.Text(16),
		NotAfter: cert.NotAfter,
		// Only a certificate naming the manager host passes etcd's peer
		// port: the CRL needs to list no other.
		Peer: slices.Contains(cert.DNSNames, pki.ManagerDNSName),
	})
	if errors.Is(err, store.ErrRevoked) {
		return fmt.Errorf("node %s: %w", nodeID, ErrRevoked)
	}
	if err != nil {
		return fmt.Errorf("record certificate %s: %w", cert.SerialNumber.Text(16), err)
	}
	return nil
}

// Revoke refuses nodeID from now on, on every manager: in Lockbox's own
// checks at once, and on every etcd peer port through the CRL, which it
// rebuilds to list every certificate ever issued to a revoked node. It is
// idempotent: after an error, revoking again finishes the job.
func (c *CA) Revoke(ctx context.Context, nodeID string) error {
	if nodeID == "" {
		return errors.New("revoke: empty node ID")
	}
	if err := c.st.Revoke(ctx, nodeID, c.now()); err != nil {
		return err
	}
	c.markRevoked(nodeID)
	if err := c.UpdateCRL(ctx); err != nil {
		return fmt.Errorf("node %s is revoked, but the CRL of the etcd peers is not updated (revoke it again): %w", nodeID, err)
	}
	return nil
}

// UpdateCRL signs a CRL listing the certificates of every revoked node and
// stores it, unless another manager stored a newer one meanwhile (then it
// builds again). The CA key must be unsealable.
func (c *CA) UpdateCRL(ctx context.Context) error {
	if err := c.unseal(ctx); err != nil {
		return err
	}
	for range maxCRLRetries {
		// The CRL's version is read before the serials: a revocation
		// that lands after the serials were read has its own manager
		// write a CRL after this read, so this swap fails and the next
		// pass includes it; an older CRL can never overwrite a newer.
		_, version, err := c.st.CRL(ctx)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		serials, _, err := c.st.RevokedSerials(ctx)
		if err != nil {
			return err
		}
		der, err := c.SignCRL(serials, c.now())
		if err != nil {
			return err
		}
		ok, err := c.st.SwapCRL(ctx, der, version)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	return errors.New("update CRL: other managers kept changing it; retry")
}

// markAllRevoked takes the full revoked set read by the follower.
func (c *CA) markAllRevoked(set map[string]struct{}) {
	for id := range set {
		c.markRevoked(id)
	}
}

func (c *CA) markRevoked(nodeID string) {
	c.mu.Lock()
	_, had := c.revoked[nodeID]
	c.revoked[nodeID] = struct{}{}
	subs := c.subs
	c.mu.Unlock()
	if had {
		return
	}
	for _, s := range subs {
		s.push(nodeID)
	}
}

// SubscribeRevocations sends each newly revoked node ID to ch, in order,
// never dropping one: a subscriber that is slow or whose channel is full
// gets them late, queued in memory (one entry per revoked node), until the
// ctx given to Open ends.
func (c *CA) SubscribeRevocations(ch chan<- string) {
	s := &subscriber{ch: ch, wake: make(chan struct{}, 1)}
	c.mu.Lock()
	c.subs = append(c.subs, s)
	c.mu.Unlock()
	go s.run(c.ctx)
}

// subscriber hands queued node IDs to its channel from its own goroutine,
// so the revocation path never blocks on a slow reader and never drops.
type subscriber struct {
	ch    chan<- string
	wake  chan struct{} // one pending wake-up is enough
	mu    sync.Mutex
	queue []string
}

func (s *subscriber) push(id string) {
	s.mu.Lock()
	s.queue = append(s.queue, id)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) run(ctx context.Context) {
	for {
		s.mu.Lock()
		q := s.queue
		s.queue = nil
		s.mu.Unlock()
		for _, id := range q {
			select {
			case s.ch <- id:
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-s.wake:
		case <-ctx.Done():
			return
		}
	}
}

// IsRevoked reports whether nodeID was revoked.
func (c *CA) IsRevoked(nodeID string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.revoked[nodeID]
	return ok
}
