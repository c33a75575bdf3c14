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

// storedTokens is the plaintext the store keeps sealed.
type storedTokens struct {
	Worker  string `json:"worker"`
	Manager string `json:"manager"`
}

func sealTokens(s Sealer, t storedTokens) ([]byte, error) {
	plain, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	sealed, err := s.Seal(plain)
	clear(plain)
	if err != nil {
		return nil, fmt.Errorf("seal join tokens: %w", err)
	}
	return sealed, nil
}

func (c *CA) tokens(ctx context.Context) (storedTokens, int64, error) {
	sealed, version, err := c.st.JoinTokens(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return storedTokens{}, 0, ErrNotInitialized
	}
	if err != nil {
		return storedTokens{}, 0, fmt.Errorf("read join tokens: %w", err)
	}
	plain, err := c.sealer.Open(sealed)
	if err != nil {
		return storedTokens{}, 0, fmt.Errorf("unseal join tokens: %w", err)
	}
	defer clear(plain)
	var t storedTokens
	if err := json.Unmarshal(plain, &t); err != nil {
		return storedTokens{}, 0, fmt.Errorf("decode join tokens: %w", err)
	}
	return t, version, nil
}

// JoinToken returns the current token for role (worker or manager),
// rotating it first when rotate is set: the old token is refused from then
// on.
func (c *CA) JoinToken(ctx context.Context, role pki.Role, rotate bool) (string, error) {
	if role != pki.RoleWorker && role != pki.RoleManager {
		return "", fmt.Errorf("join token: no token for role %s", role)
	}
	for {
		t, version, err := c.tokens(ctx)
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
			sealed, err := sealTokens(c.sealer, t)
			if err != nil {
				return "", err
			}
			ok, err := c.st.SwapJoinTokens(ctx, sealed, version)
			if err != nil {
				return "", fmt.Errorf("rotate join token: %w", err)
			}
			if !ok {
				continue // rotated concurrently; redo on the new value
			}
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
	t, _, err := c.tokens(ctx)
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
