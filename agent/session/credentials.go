package session

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	caapi "github.com/lockbox-project/lockbox/api/ca"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/ca/jointoken"
)

// managerServerName is the name every manager certificate carries
// (manager/ca.ManagerDNSName); the agent verifies managers by it.
const managerServerName = "lockbox-manager"

const (
	keyFile      = "node.key"
	certFile     = "node.crt"
	caFile       = "ca.crt"
	managersFile = "managers.json"
)

// ErrNeedToken is a first start without a join token.
var ErrNeedToken = errors.New("this node has not joined a cluster yet: pass --token with a worker join token")

// Identity is the node's credentials: its key and certificate, and the root
// CA it trusts. The certificate can be swapped by a renewal while
// connections use it.
type Identity struct {
	NodeID  string
	root    *x509.CertPool
	rootPEM []byte
	cert    atomic.Pointer[tls.Certificate]
}

// Certificate is the node's current certificate.
func (id *Identity) Certificate() *tls.Certificate { return id.cert.Load() }

// Leaf is the parsed current certificate.
func (id *Identity) Leaf() *x509.Certificate { return id.cert.Load().Leaf }

// TLSConfig returns a client configuration that presents the node's
// current certificate and trusts only the cluster's root.
func (id *Identity) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    id.root,
		ServerName: managerServerName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return id.cert.Load(), nil
		},
	}
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// loadIdentity reads the credentials a previous start saved. It returns
// os.ErrNotExist when there are none.
func loadIdentity(stateDir string) (*Identity, error) {
	keyPEM, err := os.ReadFile(filepath.Join(stateDir, keyFile))
	if err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(filepath.Join(stateDir, certFile))
	if err != nil {
		return nil, err
	}
	rootPEM, err := os.ReadFile(filepath.Join(stateDir, caFile))
	if err != nil {
		return nil, err
	}
	return newIdentity(keyPEM, certPEM, rootPEM)
}

func newIdentity(keyPEM, certPEM, rootPEM []byte) (*Identity, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootPEM) {
		return nil, errors.New("node credentials: no certificate in the root CA file")
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("node credentials: %w", err)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: cert.Leaf.NotBefore.Add(time.Second)}); err != nil {
		return nil, fmt.Errorf("node credentials: certificate not issued by the cluster's root: %w", err)
	}
	id := &Identity{NodeID: cert.Leaf.Subject.CommonName, root: pool, rootPEM: rootPEM}
	id.cert.Store(&cert)
	return id, nil
}

func (id *Identity) save(stateDir string, keyPEM, certPEM []byte) error {
	// The key goes first: a certificate never sits beside a key it does
	// not match for longer than a rename.
	for _, f := range []struct {
		name string
		data []byte
	}{{caFile, id.rootPEM}, {keyFile, keyPEM}, {certFile, certPEM}} {
		if err := writeFileAtomic(filepath.Join(stateDir, f.name), f.data); err != nil {
			return fmt.Errorf("save node credentials: %w", err)
		}
	}
	return nil
}

func newKeyAndCSR() (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate node key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode node key: %w", err)
	}
	// The CA names the node; the CSR only carries the public key.
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}), nil
}

// fetchRoot asks a manager for the root CA without trusting it, and keeps
// it only if it is the one the token pins.
func fetchRoot(ctx context.Context, addr string, tok jointoken.Token) ([]byte, *x509.CertPool, error) {
	// The manager's certificate cannot be checked before we know the root;
	// the answer is checked against the token's digest instead, and nothing
	// secret is sent on this connection.
	insecure := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true} //nolint:gosec // see above
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(insecure)))
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	resp, err := caapi.NewNodeCAClient(conn).GetRootCACertificate(ctx, &caapi.GetRootCACertificateRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("get root CA from %s: %w", addr, err)
	}
	rootPEM := resp.GetCertificatePem()
	block, _ := pem.Decode(rootPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("root CA from %s: not a PEM certificate", addr)
	}
	if !tok.PinsCA(block.Bytes) {
		return nil, nil, fmt.Errorf("root CA from %s does not match the join token's digest: refusing to join", addr)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootPEM) {
		return nil, nil, fmt.Errorf("root CA from %s: unparsable", addr)
	}
	return rootPEM, pool, nil
}

// join trades the token for a certificate at addr.
func join(ctx context.Context, stateDir, addr, token string, desc *types.NodeDescription) (*Identity, []string, error) {
	tok, err := jointoken.Parse(token)
	if err != nil {
		return nil, nil, err
	}
	rootPEM, pool, err := fetchRoot(ctx, addr, tok)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, csrPEM, err := newKeyAndCSR()
	if err != nil {
		return nil, nil, err
	}
	// The token travels only over a connection verified against the
	// pinned root.
	verified := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: managerServerName}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(verified)))
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	resp, err := caapi.NewNodeCAClient(conn).IssueNodeCertificate(ctx, &caapi.IssueNodeCertificateRequest{Token: token, CsrPem: csrPEM, Description: desc})
	if err != nil {
		return nil, nil, fmt.Errorf("join through %s: %w", addr, err)
	}
	id, err := newIdentity(keyPEM, resp.GetCertificatePem(), rootPEM)
	if err != nil {
		return nil, nil, err
	}
	if resp.GetRole() != types.NodeRole_NODE_ROLE_WORKER {
		return nil, nil, fmt.Errorf("join through %s: the token is not a worker token", addr)
	}
	if err := id.save(stateDir, keyPEM, resp.GetCertificatePem()); err != nil {
		return nil, nil, err
	}
	return id, resp.GetManagers(), nil
}

// renew gets a new certificate for a new key over conn (authenticated by
// the current certificate) and saves it.
func (id *Identity) renew(ctx context.Context, stateDir string, conn grpc.ClientConnInterface) error {
	keyPEM, csrPEM, err := newKeyAndCSR()
	if err != nil {
		return err
	}
	resp, err := caapi.NewNodeCAClient(conn).RenewNodeCertificate(ctx, &caapi.RenewNodeCertificateRequest{CsrPem: csrPEM})
	if err != nil {
		return fmt.Errorf("renew node certificate: %w", err)
	}
	next, err := newIdentity(keyPEM, resp.GetCertificatePem(), id.rootPEM)
	if err != nil {
		return err
	}
	if next.NodeID != id.NodeID {
		return fmt.Errorf("renew node certificate: the manager named node %s, not %s", next.NodeID, id.NodeID)
	}
	if err := id.save(stateDir, keyPEM, resp.GetCertificatePem()); err != nil {
		return err
	}
	id.cert.Store(next.cert.Load())
	return nil
}

// renewAt is when a certificate is renewed: two thirds into its lifetime.
func renewAt(c *x509.Certificate) time.Time {
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotBefore.Add(life * 2 / 3)
}

// managerList is the persisted set of manager addresses.
type managerList struct {
	Managers []string `json:"managers"`
}

func loadManagers(stateDir string) []string {
	b, err := os.ReadFile(filepath.Join(stateDir, managersFile))
	if err != nil {
		return nil
	}
	var l managerList
	if json.Unmarshal(b, &l) != nil {
		return nil
	}
	return l.Managers
}

func saveManagers(stateDir string, addrs []string) error {
	b, err := json.Marshal(managerList{Managers: addrs})
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(stateDir, managersFile), b)
}
