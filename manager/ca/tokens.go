package ca

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lockbox-project/lockbox/manager/store"
	"github.com/lockbox-project/lockbox/pki"
	"github.com/lockbox-project/lockbox/pki/jointoken"
)

// Join tokens: the two secrets (worker, manager) live sealed in the
// store's cluster table; a token is a secret plus the root's digest.
//
// The sealed secrets are bound to the tokens record and to its
// generation (Store.JoinTokensAD), which every write raises by one: the
// sealed value of an earlier generation, put back with a raw etcd write
// after a rotation, fails to open instead of reviving the rotated-out
// token; a whole earlier record (generation and all) is refused by any
// manager that has seen a later one (tokensFloor). Values stored before
// the binding (generation 0, empty AD) are opened once and written back
// bound.
//
// A manager token is single-use: a manager join replaces the manager
// secret in the same compare-and-swap that checked it (consumeManager),
// so of two joins racing with one token only one gets a certificate. A
// manager token leads to the key-encryption key; worker tokens, handed to
// whole fleets, stay reusable until rotated.

// storedTokens is the plaintext the store keeps sealed.
type storedTokens struct {
	Worker  string `json:"worker"`
	Manager string `json:"manager"`
	// UsedManager is the manager token consumed last, so that its reuse
	// gets an error saying so rather than "not current". It holds a
	// digest of the secret, never the secret, and only inside the
	// sealed value.
	UsedManager *usedToken `json:"used_manager,omitempty"`
}

// usedToken records one consumed manager token.
type usedToken struct {
	// Digest is SHA-256 of the secret (256 random bits, so the digest
	// gives nothing to guess from).
	Digest []byte    `json:"digest"`
	Node   string    `json:"node"`
	At     time.Time `json:"at"`
}

func secretDigest(secret string) []byte {
	d := sha256.Sum256([]byte(secret))
	return d[:]
}

// ErrTokenUsed is a manager join token presented again after the join
// that consumed it (it wraps ErrInvalidToken too).
var ErrTokenUsed = errors.New("manager join tokens are single-use")

func sealTokens(s Sealer, st *store.Store, gen uint64, t storedTokens) (store.SealedJoinTokens, error) {
	plain, err := json.Marshal(t)
	if err != nil {
		return store.SealedJoinTokens{}, err
	}
	defer clear(plain)
	return sealTokenBytes(s, st, gen, plain)
}

// sealTokenBytes seals the JSON of storedTokens as generation gen.
func sealTokenBytes(s Sealer, st *store.Store, gen uint64, plain []byte) (store.SealedJoinTokens, error) {
	sealed, err := s.SealRecord(plain, st.JoinTokensAD(gen))
	if err != nil {
		return store.SealedJoinTokens{}, fmt.Errorf("seal join tokens: %w", err)
	}
	return store.SealedJoinTokens{Generation: gen, Sealed: sealed}, nil
}

// openTokens opens t, bound to its generation (or, for a value stored
// before binding, with an empty AD), unless this CA had seen a later
// generation before the read of t began: floor is tokensFloor as it was
// then. A read that began earlier may meet an older value legitimately,
// when this CA's own swap raised the floor while the read was under way.
// The caller zeroes the plaintext.
func (c *CA) openTokens(t store.SealedJoinTokens, floor uint64) ([]byte, error) {
	if t.Generation < floor {
		return nil, fmt.Errorf("join tokens: %w", ErrRolledBack)
	}
	var ad []byte
	if t.Bound() {
		ad = c.st.JoinTokensAD(t.Generation)
	}
	plain, err := c.sealer.OpenRecord(t.Sealed, ad)
	if err != nil {
		return nil, fmt.Errorf("unseal join tokens: %w", err)
	}
	c.raiseTokensFloor(t.Generation)
	return plain, nil
}

// raiseTokensFloor notes that generation gen was opened or written.
func (c *CA) raiseTokensFloor(gen uint64) {
	for {
		cur := c.tokensFloor.Load()
		if gen <= cur || c.tokensFloor.CompareAndSwap(cur, gen) {
			return
		}
	}
}

// tokens reads and opens the join tokens; it also returns the generation
// and version read, for a compare-and-swap.
func (c *CA) tokens(ctx context.Context) (storedTokens, uint64, int64, error) {
	floor := c.tokensFloor.Load()
	stored, version, err := c.st.JoinTokens(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return storedTokens{}, 0, 0, ErrNotInitialized
	}
	if err != nil {
		return storedTokens{}, 0, 0, fmt.Errorf("read join tokens: %w", err)
	}
	plain, err := c.openTokens(stored, floor)
	if err != nil {
		return storedTokens{}, 0, 0, err
	}
	defer clear(plain)
	var t storedTokens
	if err := json.Unmarshal(plain, &t); err != nil {
		return storedTokens{}, 0, 0, fmt.Errorf("decode join tokens: %w", err)
	}
	if !stored.Bound() {
		c.bindTokens(ctx, plain, version)
	}
	return t, stored.Generation, version, nil
}

// bindTokens writes tokens stored before binding (plain, read at version)
// back bound, as generation 1. Best effort, like bindKey: the value still
// opens unbound until a later read or the data-key rotation's Reseal
// binds it.
func (c *CA) bindTokens(ctx context.Context, plain []byte, version int64) {
	next, err := sealTokenBytes(c.sealer, c.st, 1, plain)
	if err != nil {
		return
	}
	if ok, err := c.st.SwapJoinTokens(ctx, next, version); err == nil && ok {
		c.raiseTokensFloor(next.Generation)
	}
}

// JoinToken returns the current token for role (worker or manager),
// rotating it first when rotate is set: the old token is refused from then
// on.
func (c *CA) JoinToken(ctx context.Context, role pki.Role, rotate bool) (string, error) {
	if role != pki.RoleWorker && role != pki.RoleManager {
		return "", fmt.Errorf("join token: no token for role %s", role)
	}
	for {
		t, gen, version, err := c.tokens(ctx)
		if err != nil {
			return "", err
		}
		if rotate {
			s, err := jointoken.NewSecret()
			if err != nil {
				return "", err
			}
			if role == pki.RoleWorker {
				t.Worker = s
			} else {
				t.Manager = s
			}
			next, err := sealTokens(c.sealer, c.st, gen+1, t)
			if err != nil {
				return "", err
			}
			ok, err := c.st.SwapJoinTokens(ctx, next, version)
			if err != nil {
				return "", fmt.Errorf("rotate join token: %w", err)
			}
			if !ok {
				continue // rotated concurrently; redo on the new value
			}
			c.raiseTokensFloor(next.Generation)
		}
		secret := t.Worker
		if role == pki.RoleManager {
			secret = t.Manager
		}
		return jointoken.Token{CADigest: c.Digest(), Secret: secret}.String(), nil
	}
}

// CheckToken returns the role a join token grants. It does not consume
// a manager token (IssueWithToken does).
func (c *CA) CheckToken(ctx context.Context, token string) (pki.Role, error) {
	tok, err := c.parseToken(token)
	if err != nil {
		return 0, err
	}
	t, _, _, err := c.tokens(ctx)
	if err != nil {
		return 0, err
	}
	return t.roleOf(tok)
}

// parseToken parses token and checks it pins this cluster's root.
func (c *CA) parseToken(token string) (jointoken.Token, error) {
	tok, err := jointoken.Parse(token)
	if err != nil {
		return jointoken.Token{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if !tok.PinsCA(c.Cert.Raw) {
		return jointoken.Token{}, ErrTokenOtherCA
	}
	return tok, nil
}

// roleOf returns the role tok's secret grants in t.
func (t storedTokens) roleOf(tok jointoken.Token) (pki.Role, error) {
	// Check both in constant time, whichever matches.
	w, m := tok.SecretEqual(t.Worker), tok.SecretEqual(t.Manager)
	switch {
	case m:
		return pki.RoleManager, nil
	case w:
		return pki.RoleWorker, nil
	}
	if u := t.UsedManager; u != nil && subtle.ConstantTimeCompare(u.Digest, secretDigest(tok.Secret)) == 1 {
		return 0, fmt.Errorf("%w: %w: this one was used by node %s at %s; run 'lockbox join-token manager' on a manager for a new one",
			ErrInvalidToken, ErrTokenUsed, u.Node, u.At.UTC().Format(time.RFC3339))
	}
	return 0, fmt.Errorf("%w: the token is not current (rotated?)", ErrInvalidToken)
}

// consumeManager replaces the manager secret of t (read as generation gen
// at version) with a fresh one and records the old one as used by node
// at now, if the record is still at version: false when it changed
// meanwhile (the caller re-reads and checks the token again, so of two
// joins racing with one token only one passes).
func (c *CA) consumeManager(ctx context.Context, t storedTokens, gen uint64, version int64, node string) (bool, error) {
	fresh, err := jointoken.NewSecret()
	if err != nil {
		return false, err
	}
	t.UsedManager = &usedToken{Digest: secretDigest(t.Manager), Node: node, At: c.now().UTC().Truncate(time.Second)}
	t.Manager = fresh
	next, err := sealTokens(c.sealer, c.st, gen+1, t)
	if err != nil {
		return false, err
	}
	ok, err := c.st.SwapJoinTokens(ctx, next, version)
	if err != nil {
		return false, fmt.Errorf("consume manager join token: %w", err)
	}
	if ok {
		c.raiseTokensFloor(next.Generation)
	}
	return ok, nil
}
