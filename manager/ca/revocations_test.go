package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/pki"
)

// A subscriber whose channel is full still gets every revocation: the
// dispatcher must end the session of every revoked node, so none may be
// dropped (they used to be, with a non-blocking send).
func TestRevocationNoticesAreNeverDropped(t *testing.T) {
	c, ring := newCA(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	other, err := Open(ctx, c.st, ring)
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	local := make(chan string, 1)  // on the revoking CA
	remote := make(chan string, 1) // on a CA that follows the store
	c.SubscribeRevocations(local)
	other.SubscribeRevocations(remote)
	// Nobody reads while all n revocations land: both channels are full
	// after the first.
	for i := range n {
		if err := c.Revoke(ctx, fmt.Sprintf("node%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for name, ch := range map[string]chan string{"local": local, "remote": remote} {
		got := map[string]bool{}
		deadline := time.After(20 * time.Second)
		for len(got) < n {
			select {
			case id := <-ch:
				if got[id] {
					t.Fatalf("%s: %s notified twice", name, id)
				}
				got[id] = true
			case <-deadline:
				t.Fatalf("%s subscriber got %d of %d revocations", name, len(got), n)
			}
		}
	}
}

// Every certificate issued to a node (join, renewals, key pairs) is
// recorded, and revoking the node puts all of them in the CRL, signed by
// the root. After the revocation, nothing more can be recorded for it.
func TestCRLListsEveryCertificateOfARevokedNode(t *testing.T) {
	c, _ := newCA(t)
	ctx := context.Background()
	crlSerials := func() map[string]bool {
		t.Helper()
		der, _, err := c.st.CRL(ctx)
		if err != nil {
			t.Fatal(err)
		}
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := crl.CheckSignatureFrom(c.Cert); err != nil {
			t.Fatalf("CRL not signed by the root: %v", err)
		}
		out := map[string]bool{}
		for _, e := range crl.RevokedCertificateEntries {
			out[e.SerialNumber.Text(16)] = true
		}
		return out
	}
	if s := crlSerials(); len(s) != 0 {
		t.Fatalf("fresh cluster's CRL lists %v", s)
	}
	tok, err := c.JoinToken(ctx, pki.RoleManager, false)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := newCSR(t)
	id, first, err := c.IssueWithToken(ctx, tok, csr)
	if err != nil {
		t.Fatal(err)
	}
	csr2, _ := newCSR(t)
	_, renewed, err := c.Renew(ctx, id, csr2)
	if err != nil {
		t.Fatal(err)
	}
	own, err := c.IssueKeyPair(ctx, CertRequest{NodeID: id.NodeID, Role: pki.RoleManager})
	if err != nil {
		t.Fatal(err)
	}
	bystander, err := c.IssueKeyPair(ctx, CertRequest{NodeID: "other", Role: pki.RoleManager})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Revoke(ctx, id.NodeID); err != nil {
		t.Fatal(err)
	}
	listed := crlSerials()
	for what, p := range map[string][]byte{"join": first, "renewal": renewed, "key pair": own.CertPEM} {
		if s := parseCert(t, p).SerialNumber.Text(16); !listed[s] {
			t.Errorf("%s certificate %s missing from the CRL %v", what, s, listed)
		}
	}
	if s := parseCert(t, bystander.CertPEM).SerialNumber.Text(16); listed[s] || len(listed) != 3 {
		t.Errorf("CRL lists %v; the bystander is %s", listed, s)
	}
	// A renewal racing the revocation (its CA had not seen it yet) is
	// refused by the store, not handed out unlisted.
	if err := c.record(ctx, id.NodeID, parseCert(t, own.CertPEM)); !errors.Is(err, ErrRevoked) {
		t.Fatalf("record for a revoked node: %v", err)
	}
	// A worker's certificate cannot reach an etcd peer port (etcd wants
	// the manager name): its revocation lists nothing, so the CRL does
	// not grow with every worker ever removed.
	wtok, err := c.JoinToken(ctx, pki.RoleWorker, false)
	if err != nil {
		t.Fatal(err)
	}
	wcsr, _ := newCSR(t)
	wid, wcert, err := c.IssueWithToken(ctx, wtok, wcsr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Revoke(ctx, wid.NodeID); err != nil {
		t.Fatal(err)
	}
	if after := crlSerials(); after[parseCert(t, wcert).SerialNumber.Text(16)] || len(after) != 3 {
		t.Errorf("after a worker's revocation the CRL lists %v", after)
	}
}

func TestPlaceholderCRLIsEmpty(t *testing.T) {
	der, err := PlaceholderCRL()
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil || len(crl.RevokedCertificateEntries) != 0 {
		t.Fatalf("placeholder: %v, %d entries", err, len(crl.RevokedCertificateEntries))
	}
}
