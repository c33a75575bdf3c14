package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	caapi "github.com/lockbox-project/lockbox/api/ca"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/pki/jointoken"
)

// testCA is a root CA made in the test: manager/ca is the real one, but pki
// must not depend on it.
type testCA struct {
	cert *x509.Certificate
	pem  []byte
	key  *ecdsa.PrivateKey
}

func newTestCA(t testing.TB, cluster string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root", Organization: []string{cluster}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}
}

// sign issues a certificate for pub, named like manager/ca names nodes.
func (c *testCA) sign(t testing.TB, pub any, nodeID, ou string, dnsNames ...string) []byte {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: nodeID, OrganizationalUnit: []string{ou}, Organization: c.cert.Subject.Organization},
		NotBefore:    time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames:    dnsNames,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// serverCert is a TLS certificate from c naming dnsNames.
func (c *testCA) serverCert(t testing.TB, dnsNames ...string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	certPEM := c.sign(t, &key.PublicKey, "mgr", ManagerOU, dnsNames...)
	der, _ := x509.MarshalECPrivateKey(key)
	pair, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

func (c *testCA) token(t testing.TB) []byte {
	t.Helper()
	secret, err := jointoken.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return []byte(jointoken.Token{CADigest: jointoken.Digest(c.cert.Raw), Secret: secret}.String())
}

// fakeCA is a NodeCA server: it serves rootPEM as the root, and signs any
// CSR with ca for role, recording the tokens it was given.
type fakeCA struct {
	caapi.UnimplementedNodeCAServer
	ca      *testCA
	rootPEM []byte
	role    types.NodeRole
	t       testing.TB

	mu     sync.Mutex
	tokens []string
}

func (f *fakeCA) GetRootCACertificate(context.Context, *caapi.GetRootCACertificateRequest) (*caapi.GetRootCACertificateResponse, error) {
	return &caapi.GetRootCACertificateResponse{CertificatePem: f.rootPEM}, nil
}

func (f *fakeCA) IssueNodeCertificate(_ context.Context, req *caapi.IssueNodeCertificateRequest) (*caapi.IssueNodeCertificateResponse, error) {
	f.mu.Lock()
	f.tokens = append(f.tokens, req.GetToken())
	f.mu.Unlock()
	b, _ := pem.Decode(req.GetCsrPem())
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, err
	}
	ou := WorkerOU
	if f.role == types.NodeRole_NODE_ROLE_MANAGER {
		ou = ManagerOU
	}
	return &caapi.IssueNodeCertificateResponse{
		NodeId: "node1", Role: f.role, CertificatePem: f.ca.sign(f.t, csr.PublicKey, "node1", ou),
		Managers: []string{"10.0.0.1:4242"},
	}, nil
}

func (f *fakeCA) received() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tokens...)
}

// serve runs f over TLS with cert on a loopback port and returns the address.
func serve(t testing.TB, f *fakeCA, cert tls.Certificate) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}})))
	caapi.RegisterNodeCAServer(s, f)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}
