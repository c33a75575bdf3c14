package ca

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"testing"

	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
	"github.com/lockbox-project/lockbox/pki"
)

// The raw etcd keys an attacker with write access to etcd overwrites.
const (
	rawRootKey   = store.DefaultPrefix + "cluster/ca/root"
	rawTokensKey = store.DefaultPrefix + "cluster/ca/tokens"
)

func rawGet(t *testing.T, c *CA, key string) []byte {
	t.Helper()
	resp, err := c.st.Client().Get(context.Background(), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("raw get %s: %v", key, err)
	}
	return resp.Kvs[0].Value
}

func rawPut(t *testing.T, c *CA, key string, val []byte) {
	t.Helper()
	if _, err := c.st.Client().Put(context.Background(), key, string(val)); err != nil {
		t.Fatalf("raw put %s: %v", key, err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A sealed value moved from one record of the cluster table to the other
// with a raw etcd write does not open: the CA key and the join tokens are
// bound to their own records. Before the binding both were sealed with an
// empty AD, so the swapped value opened and failed later with a parse
// error on the other record's plaintext.
func TestSealedValuesCannotBeSwappedBetweenRecords(t *testing.T) {
	c, ring := newCA(t)
	ctx := t.Context()
	cl, err := c.st.GetCluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	toks, _, err := c.st.JoinTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	worker, err := c.JoinToken(ctx, pki.RoleWorker, false)
	if err != nil {
		t.Fatal(err)
	}
	origRoot, origTokens := rawGet(t, c, rawRootKey), rawGet(t, c, rawTokensKey)
	issue := func(c *CA) error {
		_, err := c.IssueKeyPair(ctx, CertRequest{NodeID: "n1", Role: pki.RoleWorker})
		return err
	}
	check := func(c *CA) error {
		_, err := c.CheckToken(ctx, worker)
		return err
	}
	for _, tc := range []struct {
		name     string
		key      string
		val      []byte
		use      func(*CA) error
		restores []byte
	}{
		{"tokens as the CA key", rawRootKey,
			mustJSON(t, store.CARoot{CertPEM: cl.Root.CertPEM, SealedKey: toks.Sealed, KeyBound: true}), issue, origRoot},
		{"tokens as an unbound CA key", rawRootKey,
			mustJSON(t, store.CARoot{CertPEM: cl.Root.CertPEM, SealedKey: toks.Sealed}), issue, origRoot},
		{"CA key as the tokens", rawTokensKey,
			mustJSON(t, store.SealedJoinTokens{Generation: toks.Generation, Sealed: cl.Root.SealedKey}), check, origTokens},
		{"CA key as unbound tokens", rawTokensKey, cl.Root.SealedKey, check, origTokens},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rawPut(t, c, tc.key, tc.val)
			defer rawPut(t, c, tc.key, tc.restores)
			// A manager that opens the CA now, as after a restart.
			fresh, err := Open(ctx, c.st, ring)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.use(fresh); !errors.Is(err, keys.ErrCorrupt) {
				t.Fatalf("swapped value: %v, want keys.ErrCorrupt", err)
			}
		})
	}
	// Restored, everything opens again: the failures were the binding.
	fresh, err := Open(ctx, c.st, ring)
	if err != nil {
		t.Fatal(err)
	}
	if err := issue(fresh); err != nil {
		t.Fatal(err)
	}
	if err := check(fresh); err != nil {
		t.Fatal(err)
	}
}

// A rotated-out join token cannot be brought back by putting the sealed
// tokens of before the rotation back into etcd. Before the binding, the
// replayed value opened and the old worker token joined again.
func TestRotatedTokenCannotBeReplayed(t *testing.T) {
	c, ring := newCA(t)
	ctx := t.Context()
	old, err := c.JoinToken(ctx, pki.RoleWorker, false)
	if err != nil {
		t.Fatal(err)
	}
	before, _, err := c.st.JoinTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	beforeRaw := rawGet(t, c, rawTokensKey)
	current, err := c.JoinToken(ctx, pki.RoleWorker, true)
	if err != nil || current == old {
		t.Fatalf("rotate: %v", err)
	}
	after, _, err := c.st.JoinTokens(ctx)
	if err != nil || after.Generation != before.Generation+1 {
		t.Fatalf("generation %d after rotating %d: %v", after.Generation, before.Generation, err)
	}
	afterRaw := rawGet(t, c, rawTokensKey)
	if role, err := c.CheckToken(ctx, old); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("rotated-out token before any replay: %v, %v", role, err)
	}
	fresh := func() *CA {
		f, err := Open(ctx, c.st, ring)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, tc := range []struct {
		name string
		val  []byte
		ca   func() *CA
		want error
	}{
		// The earlier sealed value in the current record: its AD names
		// the earlier generation, so it opens on no manager.
		{"earlier sealed value, current generation", mustJSON(t, store.SealedJoinTokens{Generation: after.Generation, Sealed: before.Sealed}), fresh, keys.ErrCorrupt},
		{"earlier sealed value, next generation", mustJSON(t, store.SealedJoinTokens{Generation: after.Generation + 1, Sealed: before.Sealed}), fresh, keys.ErrCorrupt},
		{"earlier sealed value, unbound", before.Sealed, fresh, keys.ErrCorrupt},
		// The whole earlier record, generation and all: a manager that
		// has seen the later generation refuses it. (A manager started
		// after the replay has no memory to compare with: only state
		// outside etcd could catch that.)
		{"whole earlier record, manager that rotated", beforeRaw, func() *CA { return c }, ErrRolledBack},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rawPut(t, c, rawTokensKey, tc.val)
			defer rawPut(t, c, rawTokensKey, afterRaw)
			role, err := tc.ca().CheckToken(ctx, old)
			if !errors.Is(err, tc.want) {
				t.Fatalf("old worker token after replay: role %v, %v; want %v", role, err, tc.want)
			}
		})
	}
	if role, err := fresh().CheckToken(ctx, current); err != nil || role != pki.RoleWorker {
		t.Fatalf("current token after restoring: %v, %v", role, err)
	}
}

// unbind rewrites the CA key and join tokens as a cluster made before the
// binding stored them: sealed with an empty AD (the keyring's Seal), the
// root without key_bound, the tokens as raw sealed bytes.
func unbind(t *testing.T, c *CA, ring *keys.Keyring) {
	t.Helper()
	ctx := context.Background()
	cl, err := c.st.GetCluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	der, err := ring.OpenRecord(cl.Root.SealedKey, c.st.CAKeyAD())
	if err != nil {
		t.Fatal(err)
	}
	sealedKey, err := ring.Seal(der)
	if err != nil {
		t.Fatal(err)
	}
	rawPut(t, c, rawRootKey, mustJSON(t, map[string][]byte{"cert_pem": cl.Root.CertPEM, "sealed_key": sealedKey}))
	toks, _, err := c.st.JoinTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := ring.OpenRecord(toks.Sealed, c.st.JoinTokensAD(toks.Generation))
	if err != nil {
		t.Fatal(err)
	}
	sealedToks, err := ring.Seal(plain)
	if err != nil {
		t.Fatal(err)
	}
	rawPut(t, c, rawTokensKey, sealedToks)
}

// A cluster whose CA key and join tokens were sealed before the binding
// still opens, and its values are written back bound: by the first use,
// or by the data-key rotation's Reseal. After that this manager refuses
// the unbound values if they are put back.
func TestUnboundValuesOpenAndAreBound(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		bind func(t *testing.T, c *CA)
	}{
		{"by use", func(t *testing.T, c *CA) {
			if _, err := c.IssueKeyPair(ctx, CertRequest{NodeID: "n1", Role: pki.RoleWorker}); err != nil {
				t.Fatalf("unbound CA key: %v", err)
			}
			if _, err := c.JoinToken(ctx, pki.RoleManager, false); err != nil {
				t.Fatalf("unbound tokens: %v", err)
			}
		}},
		{"by reseal", func(t *testing.T, c *CA) {
			// needs says no: only the missing binding makes it reseal.
			if n, err := c.Reseal(ctx, func([]byte) bool { return false }); err != nil || n != 2 {
				t.Fatalf("reseal: %d, %v", n, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ring := newCA(t)
			worker, err := c.JoinToken(ctx, pki.RoleWorker, false)
			if err != nil {
				t.Fatal(err)
			}
			unbind(t, c, ring)
			unboundRoot, unboundTokens := rawGet(t, c, rawRootKey), rawGet(t, c, rawTokensKey)
			old, err := Open(ctx, c.st, ring)
			if err != nil {
				t.Fatal(err)
			}
			tc.bind(t, old)

			cl, err := c.st.GetCluster(ctx)
			if err != nil || !cl.Root.KeyBound {
				t.Fatalf("root not bound: %+v, %v", cl, err)
			}
			if _, err := ring.OpenRecord(cl.Root.SealedKey, c.st.CAKeyAD()); err != nil {
				t.Fatalf("bound CA key: %v", err)
			}
			if _, err := ring.OpenRecord(cl.Root.SealedKey, nil); !errors.Is(err, keys.ErrCorrupt) {
				t.Fatalf("CA key still opens unbound: %v", err)
			}
			toks, _, err := c.st.JoinTokens(ctx)
			if err != nil || !toks.Bound() {
				t.Fatalf("tokens not bound: %+v, %v", toks, err)
			}
			if _, err := ring.OpenRecord(toks.Sealed, c.st.JoinTokensAD(toks.Generation)); err != nil {
				t.Fatalf("bound tokens: %v", err)
			}
			// The same tokens, on every manager.
			fresh, err := Open(ctx, c.st, ring)
			if err != nil {
				t.Fatal(err)
			}
			if role, err := fresh.CheckToken(ctx, worker); err != nil || role != pki.RoleWorker {
				t.Fatalf("worker token after binding: %v, %v", role, err)
			}
			if _, err := fresh.IssueKeyPair(ctx, CertRequest{NodeID: "n2", Role: pki.RoleWorker}); err != nil {
				t.Fatalf("CA key after binding: %v", err)
			}

			// Put back unbound, they are a rollback to this manager.
			rawPut(t, c, rawTokensKey, unboundTokens)
			if _, err := old.CheckToken(ctx, worker); !errors.Is(err, ErrRolledBack) {
				t.Fatalf("unbound tokens put back: %v", err)
			}
			rawPut(t, c, rawRootKey, unboundRoot)
			if _, err := old.Reseal(ctx, func([]byte) bool { return false }); !errors.Is(err, ErrRolledBack) {
				t.Fatalf("unbound CA key put back: %v", err)
			}
		})
	}
}

// A CA key that opens but is not the root certificate's (another key
// sealed for the root record) is refused before it signs anything.
func TestCAKeyMustMatchRoot(t *testing.T) {
	c, ring := newCA(t)
	ctx := t.Context()
	other, err := NewRoot()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(other.key)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := ring.SealRecord(der, c.st.CAKeyAD())
	if err != nil {
		t.Fatal(err)
	}
	rawPut(t, c, rawRootKey, mustJSON(t, store.CARoot{CertPEM: c.CertPEM, SealedKey: sealed, KeyBound: true}))
	fresh, err := Open(ctx, c.st, ring)
	if err != nil {
		t.Fatal(err)
	}
	// The CRL first: x509 checks a certificate's signature against the
	// root before handing it out, but not a CRL's.
	if err := fresh.UpdateCRL(ctx); err == nil {
		t.Fatal("a CA key that is not the root's signed the CRL")
	}
	if _, err := fresh.IssueKeyPair(ctx, CertRequest{NodeID: "n1", Role: pki.RoleWorker}); err == nil {
		t.Fatal("a CA key that is not the root's signed a certificate")
	}
}
