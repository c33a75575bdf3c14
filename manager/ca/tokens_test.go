package ca

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/lockbox-project/lockbox/pki"
	"github.com/lockbox-project/lockbox/pki/jointoken"
)

// A manager token gets one manager join: presented again, on this
// manager or another, it is refused with a message naming the node that
// used it, and the token printed afterwards is a fresh one that works.
func TestManagerTokenIsSingleUse(t *testing.T) {
	c, ring := newCA(t)
	ctx := t.Context()
	tok, err := c.JoinToken(ctx, pki.RoleManager, false)
	if err != nil {
		t.Fatal(err)
	}
	before, _, err := c.st.JoinTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := newCSR(t)
	first, _, err := c.IssueWithToken(ctx, tok, csr)
	if err != nil || first.Role != pki.RoleManager {
		t.Fatalf("first join: %+v, %v", first, err)
	}
	after, _, err := c.st.JoinTokens(ctx)
	if err != nil || after.Generation != before.Generation+1 {
		t.Fatalf("generation %d after a manager join at %d: %v", after.Generation, before.Generation, err)
	}
	other, err := Open(ctx, c.st, ring)
	if err != nil {
		t.Fatal(err)
	}
	for name, ca := range map[string]*CA{"same manager": c, "another manager": other} {
		t.Run(name, func(t *testing.T) {
			csr, _ := newCSR(t)
			id, cert, err := ca.IssueWithToken(ctx, tok, csr)
			if !errors.Is(err, ErrTokenUsed) || !errors.Is(err, ErrInvalidToken) || cert != nil {
				t.Fatalf("second join with a used manager token: %+v, %v", id, err)
			}
			for _, want := range []string{"single-use", "used by node " + first.NodeID + " at ", "lockbox join-token manager"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if _, err := ca.CheckToken(ctx, tok); !errors.Is(err, ErrTokenUsed) {
				t.Fatalf("CheckToken of a used token: %v", err)
			}
		})
	}

	// The used secret is not kept, even sealed: only its digest.
	plain, err := ring.OpenRecord(after.Sealed, c.st.JoinTokensAD(after.Generation))
	if err != nil {
		t.Fatal(err)
	}
	parsed, _ := jointoken.Parse(tok)
	if bytes.Contains(plain, []byte(parsed.Secret)) {
		t.Fatal("the stored tokens hold the used manager secret")
	}

	// The next token works once, and a rotated-out token that was never
	// used still gets the plain "not current".
	next, err := c.JoinToken(ctx, pki.RoleManager, false)
	if err != nil || next == tok {
		t.Fatalf("token after a join: same %v, %v", next == tok, err)
	}
	rotated, err := c.JoinToken(ctx, pki.RoleManager, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.IssueWithToken(ctx, next, csr); !errors.Is(err, ErrInvalidToken) || errors.Is(err, ErrTokenUsed) {
		t.Fatalf("rotated-out, unused manager token: %v", err)
	}
	if _, _, err := c.IssueWithToken(ctx, rotated, csr); err != nil {
		t.Fatalf("current manager token: %v", err)
	}
	// The record of the first use survived the rotation and the second
	// use replaced it.
	if _, _, err := c.IssueWithToken(ctx, rotated, csr); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("second use of the rotated token: %v", err)
	}
}

// Joins racing with one manager token: exactly one gets a certificate,
// whichever manager each goes through.
func TestManagerTokenRaceHasOneWinner(t *testing.T) {
	c, ring := newCA(t)
	ctx := t.Context()
	other, err := Open(ctx, c.st, ring)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.JoinToken(ctx, pki.RoleManager, false)
	if err != nil {
		t.Fatal(err)
	}
	const n = 4
	cas := []*CA{c, other}
	csrs := make([][]byte, n)
	for i := range csrs {
		csrs[i], _ = newCSR(t)
	}
	// The unseal is done before the race so that the joins meet at the
	// compare-and-swap, not at the key.
	for _, ca := range cas {
		if err := ca.unseal(ctx); err != nil {
			t.Fatal(err)
		}
	}
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, _, errs[i] = cas[i%len(cas)].IssueWithToken(ctx, tok, csrs[i])
		}()
	}
	close(start)
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrTokenUsed):
			t.Errorf("join %d: %v, want ErrTokenUsed", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d racing joins with one manager token succeeded, want 1", won, n)
	}
}

// Worker tokens are reusable: a fleet joins with one, and a manager join
// (which replaces the manager secret) leaves it alone.
func TestWorkerTokenIsReusable(t *testing.T) {
	c, _ := newCA(t)
	ctx := t.Context()
	worker, err := c.JoinToken(ctx, pki.RoleWorker, false)
	if err != nil {
		t.Fatal(err)
	}
	manager, err := c.JoinToken(ctx, pki.RoleManager, false)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, tok := range []string{worker, manager, worker, worker} {
		csr, _ := newCSR(t)
		id, _, err := c.IssueWithToken(ctx, tok, csr)
		if err != nil || seen[id.NodeID] {
			t.Fatalf("join %d: %+v, %v", i, id, err)
		}
		seen[id.NodeID] = true
	}
	if again, err := c.JoinToken(ctx, pki.RoleWorker, false); err != nil || again != worker {
		t.Fatalf("worker token changed by joins: %v", err)
	}
}

// A manager that cannot sign (locked: its CA key does not open) refuses
// the join without burning the token.
func TestLockedCADoesNotConsumeManagerToken(t *testing.T) {
	c, _ := newCA(t)
	ctx := t.Context()
	tok, err := c.JoinToken(ctx, pki.RoleManager, false)
	if err != nil {
		t.Fatal(err)
	}
	c.keyMu.Lock()
	key, sealed := c.key, c.sealedKey
	c.key, c.sealedKey = nil, []byte("not a sealed key")
	c.keyMu.Unlock()
	csr, _ := newCSR(t)
	if _, _, err := c.IssueWithToken(ctx, tok, csr); err == nil {
		t.Fatal("a CA whose key does not open signed")
	}
	c.keyMu.Lock()
	c.key, c.sealedKey = key, sealed
	c.keyMu.Unlock()
	if _, _, err := c.IssueWithToken(ctx, tok, csr); err != nil {
		t.Fatalf("the token after a refused join on a locked CA: %v", err)
	}
}
