package grants

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/lockbox-project/lockbox/api/claimrule"
	"github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/internal/secretmem"
	"github.com/lockbox-project/lockbox/mounter"
)

// NotGrantedError is a claim of a service that has no grant on this node.
type NotGrantedError struct {
	Service string
	NodeID  string
	// NoSnapshot says the node has not received its grants from any
	// manager since the agent started.
	NoSnapshot bool
}

func (e *NotGrantedError) Error() string {
	node := e.NodeID
	if node == "" {
		node = "(not yet joined)"
	}
	msg := fmt.Sprintf("service %q has no grant on node %s", e.Service, node)
	if e.NoSnapshot {
		msg += " (the agent has not received its grants from a manager yet)"
	}
	return msg
}

// ErrNotDelivered is a grant whose secret bytes the node does not hold.
var ErrNotDelivered = errors.New("secret not delivered to this node")

// Cache is the node's grants and the secret bytes, in locked memory. It is
// safe for concurrent use.
type Cache struct {
	mu     sync.RWMutex
	state  State
	nodeID string
	byName map[string]string // service name -> ID
	data   map[string]*secretmem.Buffer
	closed bool
	// dropped counts the secret buffers freed so far.
	dropped uint64
	// synced is set by the first message applied.
	synced bool
	// changed is closed, and replaced, by every message applied (Changed).
	changed chan struct{}
}

// NewCache returns an empty cache.
func NewCache() *Cache {
	return &Cache{byName: map[string]string{}, data: map[string]*secretmem.Buffer{}, changed: make(chan struct{})}
}

// Changed returns a channel that is closed when the next message is
// applied: the agent then looks whether a live-update service's running
// containers need new files. Take the channel before reading the grants,
// so that a change in between is not missed.
func (c *Cache) Changed() <-chan struct{} {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.changed
}

// Apply reconciles msg into the cache. Whatever happens, every secret's
// data in msg is zeroed before Apply returns: the bytes live on only in
// locked memory.
func (c *Cache) Apply(msg *dispatcher.SessionMessage) error {
	defer zeroMessage(msg)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("grant cache closed")
	}
	next, diff, err := Reconcile(c.state, msg)
	if err != nil {
		return err
	}
	// Load before dropping so that an allocation failure leaves the cache
	// as it was.
	loaded := make(map[string]*secretmem.Buffer, len(diff.Load))
	for _, s := range diff.Load {
		b, err := secretmem.Take(s.GetData())
		if err != nil {
			for _, b := range loaded {
				b.Free()
			}
			return fmt.Errorf("hold secret %q: %w", s.GetName(), err)
		}
		loaded[s.GetId()] = b
	}
	for _, id := range diff.Drop {
		if b := c.data[id]; b != nil {
			b.Free()
			delete(c.data, id)
			c.dropped++
		}
	}
	for id, b := range loaded {
		c.data[id] = b
	}
	c.state = next
	c.synced = true
	if id := msg.GetNodeId(); id != "" {
		c.nodeID = id
	}
	c.byName = make(map[string]string, len(next.Services))
	for id, svc := range next.Services {
		c.byName[svc.Name] = id
	}
	close(c.changed)
	c.changed = make(chan struct{})
	return nil
}

func zeroMessage(msg *dispatcher.SessionMessage) {
	for _, ch := range msg.GetChanges() {
		if s := ch.GetAssignment().GetSecret(); s != nil {
			secretmem.Zero(s.Data)
		}
	}
}

// SetNodeID records the node's identity, for error messages.
func (c *Cache) SetNodeID(id string) {
	c.mu.Lock()
	c.nodeID = id
	c.mu.Unlock()
}

// NodeID is the node's identity as the manager last named it.
func (c *Cache) NodeID() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.nodeID
}

// Dropped is how many secret buffers the cache has zeroed and freed since
// it was made: a caller can tell that a message removed secrets.
func (c *Cache) Dropped() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.dropped
}

// Revision is the revision of the last message applied.
func (c *Cache) Revision() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.state.Revision
}

// Counts returns how many services and secrets the node holds.
func (c *Cache) Counts() (services, secrets int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.state.Services), len(c.data)
}

// ServiceNames lists the services placed on the node, sorted.
func (c *Cache) ServiceNames() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	names := make([]string, 0, len(c.byName))
	for n := range c.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Restrict returns a view of one service's grants: it reads only the
// secrets that service references. A service with no grant on the node is
// a *NotGrantedError.
func (c *Cache) Restrict(service string) (*Restricted, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	id, ok := c.byName[service]
	if !ok {
		return nil, &NotGrantedError{Service: service, NodeID: c.nodeID, NoSnapshot: !c.synced}
	}
	svc := c.state.Services[id]
	r := &Restricted{service: svc.Name, rules: svc.Rules, live: svc.LiveUpdate, grants: make([]mounter.Grant, len(svc.Grants)), data: map[string]*secretmem.Buffer{}}
	for i, g := range svc.Grants {
		g.Size = c.state.Secrets[g.SecretID].Size
		r.grants[i] = g
		if b := c.data[g.SecretID]; b != nil {
			r.data[g.SecretID] = b
		}
	}
	return r, nil
}

// Rules returns the claim rules of a service placed on the node, and false
// when the service has no grant here. The agent decides a claim with
// rules.Decide(facts); Restricted.Rules gives the same rules with the
// grants they guard.
func (c *Cache) Rules(service string) (claimrule.Set, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	id, ok := c.byName[service]
	if !ok {
		return claimrule.Set{}, false
	}
	return c.state.Services[id].Rules, true
}

// Close frees every secret buffer. The cache refuses messages afterwards.
func (c *Cache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, b := range c.data {
		b.Free()
		delete(c.data, id)
	}
	c.state = State{}
	c.byName = map[string]string{}
	c.closed = true
}

// Restricted is one service's grants and access to exactly their secrets.
// It implements mounter.SecretSource. If a grant leaves the node while a
// Restricted is in use, its secret's bytes are already zeroed and
// WithSecret fails rather than serve them.
type Restricted struct {
	service string
	rules   claimrule.Set
	live    bool
	grants  []mounter.Grant
	data    map[string]*secretmem.Buffer
}

var _ mounter.SecretSource = (*Restricted)(nil)

// Service is the service's name.
func (r *Restricted) Service() string { return r.service }

// Rules are the service's claim rules from the same message as its grants:
// a caller that checks them with Decide before mounting checks the rules
// that guard exactly these grants.
func (r *Restricted) Rules() claimrule.Set { return r.rules }

// LiveUpdate says whether the service's running containers follow a
// change of its grants (a live update).
func (r *Restricted) LiveUpdate() bool { return r.live }

// Grants returns the service's grants with their sizes.
func (r *Restricted) Grants() []mounter.Grant {
	return append([]mounter.Grant(nil), r.grants...)
}

// WithSecret calls fn with the bytes of a secret this service references.
func (r *Restricted) WithSecret(secretID string, fn func(data []byte) error) error {
	b, ok := r.data[secretID]
	if !ok {
		return fmt.Errorf("service %q, secret %s: %w", r.service, secretID, ErrNotDelivered)
	}
	err := b.Use(fn)
	if errors.Is(err, secretmem.ErrFreed) {
		return fmt.Errorf("service %q, secret %s: grant removed while mounting: %w", r.service, secretID, ErrNotDelivered)
	}
	return err
}
