package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	caapi "github.com/lockbox-project/lockbox/api/ca"
	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
	"github.com/lockbox-project/lockbox/pki"
	"github.com/lockbox-project/lockbox/pki/jointoken"
)

// newCA initialises a cluster CA on a fresh embedded etcd.
func newCA(t *testing.T) (*CA, *keys.Keyring) {
	t.Helper()
	m := etcdtest.Start(t)
	ring, err := keys.NewKeyring()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ring.Close)
	root, err := NewRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st := store.New(m.Client(), nil)
	if err := Save(ctx, st, ring, root); err != nil {
		t.Fatal(err)
	}
	if err := Save(ctx, st, ring, root); !errors.Is(err, ErrAlreadyInitialized) {
		t.Fatalf("second Save: %v, want ErrAlreadyInitialized", err)
	}
	c, err := Open(ctx, st, ring)
	if err != nil {
		t.Fatal(err)
	}
	return c, ring
}

func newCSR(t testing.TB) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), key
}

func parseCert(t testing.TB, p []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(p)
	if b == nil {
		t.Fatal("not PEM")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIssueRenewAndTokens(t *testing.T) {
	c, _ := newCA(t)
	ctx := context.Background()
	worker, err := c.JoinToken(ctx, pki.RoleWorker, false)
	if err != nil {
		t.Fatal(err)
	}
	manager, err := c.JoinToken(ctx, pki.RoleManager, false)
	if err != nil {
		t.Fatal(err)
	}
	if worker == manager {
		t.Fatal("worker and manager tokens are the same")
	}
	tok, err := jointoken.Parse(worker)
	if err != nil || !tok.PinsCA(c.Cert.Raw) {
		t.Fatalf("worker token %v does not pin the CA: %v", tok.Redacted(), err)
	}

	for _, tc := range []struct {
		token string
		role  pki.Role
	}{{worker, pki.RoleWorker}, {manager, pki.RoleManager}} {
		csr, _ := newCSR(t)
		id, certPEM, err := c.IssueWithToken(ctx, tc.token, csr)
		if err != nil {
			t.Fatal(err)
		}
		cert := parseCert(t, certPEM)
		if _, err := cert.Verify(x509.VerifyOptions{Roots: c.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("issued certificate does not verify: %v", err)
		}
		got, err := pki.IdentityFromCert(cert)
		if err != nil || got != id || got.Role != tc.role || got.ClusterID != c.ClusterID || len(got.NodeID) != 25 {
			t.Fatalf("identity %+v (%v), issued as %+v", got, err, id)
		}
		if d := cert.NotAfter.Sub(cert.NotBefore); d < DefaultValidity || d > DefaultValidity+time.Hour {
			t.Fatalf("validity %s", d)
		}
		if (tc.role == pki.RoleManager) != (len(cert.DNSNames) == 1 && cert.DNSNames[0] == pki.ManagerDNSName) {
			t.Fatalf("role %s has DNS names %v", tc.role, cert.DNSNames)
		}

		// Renewal keeps the ID and role, with a new key.
		csr2, _ := newCSR(t)
		rid, renewed, err := c.Renew(ctx, id, csr2)
		if err != nil {
			t.Fatal(err)
		}
		if rid.NodeID != id.NodeID || rid.Role != id.Role || rid.Serial == id.Serial {
			t.Fatalf("renewed %+v from %+v", rid, id)
		}
		_ = renewed
		if err := c.Revoke(ctx, id.NodeID); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Renew(ctx, id, csr2); !errors.Is(err, ErrRevoked) {
			t.Fatalf("renew after revoke: %v", err)
		}
	}

	// Rotation: the old token is refused from then on, the other role's
	// token is untouched.
	rotated, err := c.JoinToken(ctx, pki.RoleWorker, true)
	if err != nil || rotated == worker {
		t.Fatalf("rotate: %q %v", rotated, err)
	}
	csr, _ := newCSR(t)
	if _, _, err := c.IssueWithToken(ctx, worker, csr); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("old worker token: %v", err)
	}
	if _, _, err := c.IssueWithToken(ctx, rotated, csr); err != nil {
		t.Fatalf("rotated worker token: %v", err)
	}
	// (Manager tokens are single-use: the loop above consumed the first.)
	if manager, err = c.JoinToken(ctx, pki.RoleManager, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.IssueWithToken(ctx, manager, csr); err != nil {
		t.Fatalf("manager token after worker rotation: %v", err)
	}

	// A CSR naming addresses is a manager's: with a worker token it is
	// refused (a manager joining with the wrong token), with a manager
	// token the addresses are signed.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{IPAddresses: []net.IP{net.ParseIP("127.0.0.9")}}, key)
	if err != nil {
		t.Fatal(err)
	}
	addrCSR := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	if manager, err = c.JoinToken(ctx, pki.RoleManager, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.IssueWithToken(ctx, manager, addrCSR); err != nil {
		t.Fatalf("manager token, CSR with addresses: %v", err)
	}

	// Bad tokens and CSRs.
	other, _ := NewRoot()
	otherTok := jointoken.Token{CADigest: other.Digest(), Secret: tok.Secret}.String()
	for name, tc := range map[string]struct {
		token string
		csr   []byte
		want  error
	}{
		"garbage token":             {"hello", csr, ErrInvalidToken},
		"other cluster":             {otherTok, csr, ErrTokenOtherCA},
		"guessed secret":            {jointoken.Token{CADigest: c.Digest(), Secret: mustSecret(t)}.String(), csr, ErrInvalidToken},
		"no CSR":                    {rotated, nil, ErrBadCSR},
		"not a CSR":                 {rotated, []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), ErrBadCSR},
		"worker token, manager CSR": {rotated, addrCSR, ErrWrongRoleToken},
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := c.IssueWithToken(ctx, tc.token, tc.csr); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func mustSecret(t *testing.T) string {
	s, err := jointoken.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRevocationReachesOtherManagers(t *testing.T) {
	c, ring := newCA(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	other, err := Open(ctx, c.st, ring)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 1)
	other.SubscribeRevocations(ch)
	if err := c.Revoke(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ch:
		if got != "node1" || !other.IsRevoked("node1") {
			t.Fatalf("revoked %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("revocation did not reach the other CA")
	}
	// A third CA loading now sees it from the start.
	third, err := Open(ctx, c.st, ring)
	if err != nil || !third.IsRevoked("node1") || third.IsRevoked("node2") {
		t.Fatalf("loaded revocations wrong: %v", err)
	}
}

// serveNodeCA runs the NodeCA service over real TLS on loopback.
func serveNodeCA(t *testing.T, c *CA) string {
	t.Helper()
	own, err := c.IssueKeyPair(context.Background(), CertRequest{NodeID: "mgr", Role: pki.RoleManager, IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := own.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(c.ServerTLS(func() *tls.Certificate { return &cert }))))
	caapi.RegisterNodeCAServer(s, NewServer(c, nil, func() []string { return []string{l.Addr().String()} }, nil))
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

func dial(t *testing.T, addr string, cfg *tls.Config) caapi.NodeCAClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return caapi.NewNodeCAClient(conn)
}

// join does what an agent does: fetch the root without trusting anyone,
// pin it by the token, then ask for a certificate over verified TLS.
func join(t *testing.T, addr, token string) (tls.Certificate, []byte, error) {
	ctx := context.Background()
	tok, err := jointoken.Parse(token)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	// InsecureSkipVerify is only for this first call; its answer is checked
	// against the digest in the token before anything trusts it.
	insecure := dial(t, addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	root, err := insecure.GetRootCACertificate(ctx, &caapi.GetRootCACertificateRequest{})
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	b, _ := pem.Decode(root.CertificatePem)
	if b == nil || !tok.PinsCA(b.Bytes) {
		return tls.Certificate{}, nil, errors.New("root CA does not match the token")
	}
	cfg, err := pki.ClientTLSFromPEM(root.CertificatePem, tls.Certificate{})
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	cfg.Certificates = nil
	csr, key := newCSR(t)
	resp, err := dial(t, addr, cfg).IssueNodeCertificate(ctx, &caapi.IssueNodeCertificateRequest{Token: token, CsrPem: csr})
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	der, _ := x509.MarshalECPrivateKey(key)
	pair, err := tls.X509KeyPair(resp.CertificatePem, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	return pair, root.CertificatePem, err
}

func TestNodeCAOverTLS(t *testing.T) {
	c, _ := newCA(t)
	ctx := context.Background()
	addr := serveNodeCA(t, c)
	token, _ := c.JoinToken(ctx, pki.RoleWorker, false)

	cert, rootPEM, err := join(t, addr, token)
	if err != nil {
		t.Fatal(err)
	}
	// Pinning: a token naming another CA makes the joiner refuse the root.
	other, _ := NewRoot()
	tok, _ := jointoken.Parse(token)
	if _, _, err := join(t, addr, jointoken.Token{CADigest: other.Digest(), Secret: tok.Secret}.String()); err == nil {
		t.Fatal("joiner accepted a root that its token does not pin")
	}

	renew := func(cert tls.Certificate) error {
		cfg, err := pki.ClientTLSFromPEM(rootPEM, cert)
		if err != nil {
			t.Fatal(err)
		}
		csr, _ := newCSR(t)
		_, err = dial(t, addr, cfg).RenewNodeCertificate(ctx, &caapi.RenewNodeCertificateRequest{CsrPem: csr})
		return err
	}
	if err := renew(cert); err != nil {
		t.Fatalf("renew with a valid certificate: %v", err)
	}
	if err := renew(tls.Certificate{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("renew without a certificate: %v", err)
	}

	// A certificate from another CA is refused at the handshake.
	foreign, err := other.NewKeyPair(CertRequest{NodeID: "intruder", Role: pki.RoleWorker})
	if err != nil {
		t.Fatal(err)
	}
	fc, _ := foreign.TLSCertificate()
	if err := renew(fc); err == nil {
		t.Fatal("certificate of another CA accepted")
	}

	// An expired certificate is refused.
	expired, err := c.IssueKeyPair(context.Background(), CertRequest{NodeID: "old", Role: pki.RoleWorker, NotBefore: time.Now().Add(-48 * time.Hour), Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ec, _ := expired.TLSCertificate()
	if err := renew(ec); err == nil {
		t.Fatal("expired certificate accepted")
	}

	// A revoked node is refused from then on.
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	if err := c.Revoke(ctx, leaf.Subject.CommonName); err != nil {
		t.Fatal(err)
	}
	if err := renew(cert); err == nil {
		t.Fatal("revoked certificate accepted")
	}
}

func TestResealFollowsDataKey(t *testing.T) {
	c, ring := newCA(t)
	ctx := context.Background()
	// Everything sealed so far uses the ring's key: "needs" says yes to
	// all, Reseal writes both items back, and they still open.
	n, err := c.Reseal(ctx, func([]byte) bool { return true })
	if err != nil || n != 2 {
		t.Fatalf("resealed %d, %v", n, err)
	}
	if _, err := c.JoinToken(ctx, pki.RoleWorker, false); err != nil {
		t.Fatal(err)
	}
	fresh, err := Open(ctx, c.st, ring)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.IssueKeyPair(ctx, CertRequest{NodeID: "x", Role: pki.RoleWorker}); err != nil {
		t.Fatalf("CA key does not open after reseal: %v", err)
	}
}

func TestNeedsRenewal(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	cert := &x509.Certificate{NotBefore: start, NotAfter: start.Add(90 * 24 * time.Hour)}
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{
		{0, false},
		{59 * 24 * time.Hour, false},
		{61 * 24 * time.Hour, true},
		{100 * 24 * time.Hour, true},
	} {
		if got := NeedsRenewal(cert, start.Add(tc.at)); got != tc.want {
			t.Errorf("after %s: NeedsRenewal = %v", tc.at, got)
		}
	}
}

func FuzzParseCSR(f *testing.F) {
	csr, _ := newCSR(f)
	f.Add(csr)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ParseCSR(b)
		if err != nil {
			if !errors.Is(err, ErrBadCSR) {
				t.Fatalf("error %v is not ErrBadCSR", err)
			}
			return
		}
		if checkPublicKey(req.PublicKey) != nil || req.CheckSignature() != nil {
			t.Fatal("accepted a CSR with a bad key or signature")
		}
	})
}
