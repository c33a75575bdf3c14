package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/pki/jointoken"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestFetchPinnedRoot: only the root the token pins is ever returned; an
// impostor's root, alone or hidden behind the real one, never is.
func TestFetchPinnedRoot(t *testing.T) {
	real, impostor := newTestCA(t, "real"), newTestCA(t, "impostor")
	tok, _ := jointoken.Parse(string(real.token(t)))
	tests := []struct {
		name    string
		served  []byte
		wantErr error // nil: the real root comes back
		anyErr  bool
	}{
		{name: "the pinned root", served: real.pem},
		{name: "an impostor's root", served: impostor.pem, wantErr: ErrRootMismatch},
		{name: "an impostor's root before the real one", served: append(append([]byte{}, impostor.pem...), real.pem...), wantErr: ErrRootMismatch},
		// The real root is public: an impostor can serve it with its own
		// appended. Only the pinned certificate may become a trust anchor.
		{name: "the real root with an impostor's appended", served: append(append([]byte{}, real.pem...), impostor.pem...)},
		{name: "not PEM", served: []byte("hello"), anyErr: true},
		{name: "nothing", served: nil, anyErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The server's own certificate is the impostor's: the fetch
			// does not trust the connection, only the digest.
			addr := serve(t, &fakeCA{rootPEM: tt.served}, impostor.serverCert(t, ManagerDNSName))
			rootPEM, pool, err := FetchPinnedRoot(ctxT(t), addr, tok)
			switch {
			case tt.wantErr != nil || tt.anyErr:
				if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				if rootPEM != nil || pool != nil {
					t.Fatal("a root came back with the error")
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if !bytes.Equal(rootPEM, real.pem) {
				t.Errorf("root PEM:\n%s\nwant only the pinned root:\n%s", rootPEM, real.pem)
			}
			impostorLeaf := impostor.serverCert(t, ManagerDNSName).Leaf
			if _, err := impostorLeaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: ManagerDNSName}); err == nil {
				t.Error("the pool trusts a certificate of the impostor's CA")
			}
			realLeaf := real.serverCert(t, ManagerDNSName).Leaf
			if _, err := realLeaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: ManagerDNSName}); err != nil {
				t.Errorf("the pool does not trust the real CA: %v", err)
			}
		})
	}
}

// TestJoinNeverSendsTheTokenToAnImpostor performs the attack: a server
// that is not the cluster's manager asks for the token. It gets nothing,
// whether it serves its own root or hides its root behind the real one.
func TestJoinNeverSendsTheTokenToAnImpostor(t *testing.T) {
	real, impostor := newTestCA(t, "real"), newTestCA(t, "impostor")
	tests := []struct {
		name   string
		served []byte
	}{
		{"its own root", impostor.pem},
		{"the real root with its own appended", append(append([]byte{}, real.pem...), impostor.pem...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeCA{ca: impostor, rootPEM: tt.served, role: types.NodeRole_NODE_ROLE_WORKER, t: t}
			addr := serve(t, f, impostor.serverCert(t, ManagerDNSName))
			_, err := Join(ctxT(t), JoinRequest{Addr: addr, Token: real.token(t), Role: types.NodeRole_NODE_ROLE_WORKER})
			if err == nil {
				t.Fatal("joined an impostor")
			}
			if got := f.received(); len(got) != 0 {
				t.Fatalf("the impostor received the token: %q", got)
			}
		})
	}
}

func TestJoin(t *testing.T) {
	real := newTestCA(t, "real")
	tests := []struct {
		name    string
		granted types.NodeRole
		want    types.NodeRole
		serverN []string // DNS names of the manager's certificate
		wantErr error
		anyErr  bool
	}{
		{name: "worker", granted: types.NodeRole_NODE_ROLE_WORKER, want: types.NodeRole_NODE_ROLE_WORKER, serverN: []string{ManagerDNSName}},
		{name: "manager", granted: types.NodeRole_NODE_ROLE_MANAGER, want: types.NodeRole_NODE_ROLE_MANAGER, serverN: []string{ManagerDNSName}},
		{name: "a manager token given to a worker", granted: types.NodeRole_NODE_ROLE_MANAGER, want: types.NodeRole_NODE_ROLE_WORKER, serverN: []string{ManagerDNSName}, wantErr: ErrWrongRole},
		{name: "a worker token given to a manager", granted: types.NodeRole_NODE_ROLE_WORKER, want: types.NodeRole_NODE_ROLE_MANAGER, serverN: []string{ManagerDNSName}, wantErr: ErrWrongRole},
		// A worker of the same cluster holds a certificate of the right
		// CA but not the manager name: it must not receive tokens.
		{name: "a server without the manager name", granted: types.NodeRole_NODE_ROLE_WORKER, want: types.NodeRole_NODE_ROLE_WORKER, serverN: []string{"node-7"}, anyErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeCA{ca: real, rootPEM: real.pem, role: tt.granted, t: t}
			addr := serve(t, f, real.serverCert(t, tt.serverN...))
			token := real.token(t)
			j, err := Join(ctxT(t), JoinRequest{Addr: addr, Token: token, Role: tt.want,
				Description: &types.NodeDescription{Hostname: "h"}})
			if tt.wantErr != nil || tt.anyErr {
				if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				if tt.anyErr && len(f.received()) != 0 {
					t.Fatal("the token went to a server without the manager name")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.received(); len(got) != 1 || got[0] != string(token) {
				t.Fatalf("server received %q, want the token once", got)
			}
			if j.NodeID != "node1" || !bytes.Equal(j.RootPEM, real.pem) || len(j.Managers) != 1 || !strings.Contains(string(j.KeyPEM), "PRIVATE KEY") {
				t.Fatalf("joined: %+v", j)
			}
			id, err := IdentityFromCert(j.Cert.Leaf)
			if err != nil || id.Role.NodeRole() != tt.want {
				t.Fatalf("identity %+v, %v", id, err)
			}
		})
	}
}

func TestNewKeyAndCSR(t *testing.T) {
	keyPEM, csrPEM, err := NewKeyAndCSR([]string{"mgr.example"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(csrPEM)
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		t.Fatalf("CSR: %v", err)
	}
	if len(csr.DNSNames) != 1 || csr.DNSNames[0] != "mgr.example" || csr.Subject.CommonName != "" {
		t.Errorf("CSR names %v, CN %q", csr.DNSNames, csr.Subject.CommonName)
	}
	if !strings.Contains(string(keyPEM), "EC PRIVATE KEY") {
		t.Error("no EC key")
	}
}
