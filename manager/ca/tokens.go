package ca

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

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

// storedTokens is the plaintext the store keeps sealed.
type storedTokens struct {
	Worker  string `json:"worker"`
	Manager string `json:"manager"`
}

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
// before binding, with an empty AD), unless this CA has seen a later
// generation. The caller zeroes the plaintext.
func (c *CA) openTokens(t store.SealedJoinTokens) ([]byte, error) {
	if t.Generation < c.tokensFloor.Load() {
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
	stored, version, err := c.st.JoinTokens(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return storedTokens{}, 0, 0, ErrNotInitialized
	}
	if err != nil {
		return storedTokens{}, 0, 0, fmt.Errorf("read join tokens: %w", err)
	}
	plain, err := c.openTokens(stored)
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

// CheckToken returns the role a join token grants.
func (c *CA) CheckToken(ctx context.Context, token string) (pki.Role, error) {
	tok, err := jointoken.Parse(token)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if !tok.PinsCA(c.Cert.Raw) {
		return 0, ErrTokenOtherCA
	}
	t, _, _, err := c.tokens(ctx)
	if err != nil {
		return 0, err
	}
	// Check both in constant time, whichever matches.
	w, m := tok.SecretEqual(t.Worker), tok.SecretEqual(t.Manager)
	switch {
	case m:
		return pki.RoleManager, nil
	case w:
		return pki.RoleWorker, nil
	}
	return 0, fmt.Errorf("%w: the token is not current (rotated?)", ErrInvalidToken)
}
