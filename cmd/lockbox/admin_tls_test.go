package main

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
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/pki"
)

// testCA issues certificates for the TLS test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) issue(t *testing.T, cn string, usage x509.ExtKeyUsage, dnsNames ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, DNSNames: dnsNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func mustPair(t *testing.T, ca *testCA, cn string, usage x509.ExtKeyUsage, dnsNames ...string) tls.Certificate {
	c, k := ca.issue(t, cn, usage, dnsNames...)
	pair, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// listOnly answers ListSecrets with one secret.
type listOnly struct {
	adminapi.UnimplementedAdminServer
}

func (listOnly) ListSecrets(context.Context, *adminapi.ListSecretsRequest) (*adminapi.ListSecretsResponse, error) {
	return &adminapi.ListSecretsResponse{Secrets: []*types.Secret{{Id: "abc", Spec: &types.SecretSpec{Name: "over-tls"}}}}, nil
}

// TestCLIOverMutualTLS dials a tcp:// manager with --tlscacert/--tlscert/
// --tlskey; the server requires a client certificate from its CA.
func TestCLIOverMutualTLS(t *testing.T) {
	ca := newTestCA(t, "lockbox test CA")
	srvCert, srvKey := ca.issue(t, "manager", x509.ExtKeyUsageServerAuth, pki.ManagerDNSName)
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13,
	})))
	adminapi.RegisterAdminServer(gs, listOnly{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(l)
	t.Cleanup(gs.Stop)

	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cliCert, cliKey := ca.issue(t, "admin", x509.ExtKeyUsageClientAuth)
	caFile, certFile, keyFile := write("ca.pem", ca.pem), write("cert.pem", cliCert), write("key.pem", cliKey)
	host := "tcp://" + l.Addr().String()

	run := func(args ...string) (string, error) {
		root := newRootCommand()
		var out strings.Builder
		root.SetOut(&out)
		root.SetArgs(append([]string{"-H", host, "--timeout", "10s"}, args...))
		err := root.Execute()
		return out.String(), err
	}
	out, err := run("--tlscacert", caFile, "--tlscert", certFile, "--tlskey", keyFile, "secret", "ls", "--format", "{{.Name}}")
	if err != nil || out != "over-tls\n" {
		t.Fatalf("ls over mTLS: %q %v", out, err)
	}
	// A client certificate from another CA is refused.
	other := newTestCA(t, "other CA")
	oc, ok := other.issue(t, "admin", x509.ExtKeyUsageClientAuth)
	if _, err := run("--tlscacert", caFile, "--tlscert", write("oc.pem", oc), "--tlskey", write("ok.pem", ok), "secret", "ls"); err == nil {
		t.Fatal("certificate from another CA accepted")
	}
	// A certificate of the right CA without the manager name (a node's) is
	// not a manager.
	gs2 := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{mustPair(t, ca, "node", x509.ExtKeyUsageServerAuth)}, MinVersion: tls.VersionTLS13,
	})))
	adminapi.RegisterAdminServer(gs2, listOnly{})
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs2.Serve(l2)
	t.Cleanup(gs2.Stop)
	root := newRootCommand()
	root.SetArgs([]string{"-H", "tcp://" + l2.Addr().String(), "--timeout", "10s", "--tlscacert", caFile, "--tlscert", certFile, "--tlskey", keyFile, "secret", "ls"})
	if err := root.Execute(); err == nil {
		t.Fatal("a server without the manager name was trusted")
	}
	// A manager whose certificate another CA signed is refused by the CLI.
	if _, err := run("--tlscacert", write("other-ca.pem", other.pem), "--tlscert", certFile, "--tlskey", keyFile, "secret", "ls"); err == nil {
		t.Fatal("manager certificate from another CA accepted")
	}
}
