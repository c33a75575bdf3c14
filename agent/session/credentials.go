package session

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	caapi "github.com/lockbox-project/lockbox/api/ca"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/atomicfile"
	"github.com/lockbox-project/lockbox/pki"
)

const (
	keyFile      = "node.key"
	certFile     = "node.crt"
	caFile       = "ca.crt"
	managersFile = "managers.json"
)

// ErrNeedToken is a first start without a join token.
var ErrNeedToken = errors.New("this node has not joined a cluster yet: start it with --token-file FILE (or - for stdin) holding a worker join token")

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
	return pki.ClientTLS(id.root, id.cert.Load)
}

// loadIdentity reads the credentials a previous start saved. It returns
// os.ErrNotExist when there are none.
func loadIdentity(stateDir string) (*Identity, error) {
	keyPEM, err := os.ReadFile(filepath.Join(stateDir, keyFile))
	if err != nil {
		return nil, err
	}
	defer clear(keyPEM) // the parsed key lives on in the certificate
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
	pool, err := pki.RootPool(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("node credentials: %w", err)
	}
	cert, err := pki.VerifyNodeCert(certPEM, keyPEM, pool)
	if err != nil {
		return nil, err
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
		if err := atomicfile.WriteFile(filepath.Join(stateDir, f.name), f.data, 0o600); err != nil {
			return fmt.Errorf("save node credentials: %w", err)
		}
	}
	return nil
}

// join trades the token for a certificate at addr and saves the new
// credentials. The caller zeroes token.
func join(ctx context.Context, stateDir, addr string, token []byte, desc *types.NodeDescription) (*Identity, []string, error) {
	joined, err := pki.Join(ctx, pki.JoinRequest{Addr: addr, Token: token, Role: types.NodeRole_NODE_ROLE_WORKER, Description: desc})
	if err != nil {
		return nil, nil, err
	}
	defer clear(joined.KeyPEM)
	id := &Identity{NodeID: joined.NodeID, root: joined.Root, rootPEM: joined.RootPEM}
	id.cert.Store(&joined.Cert)
	if err := id.save(stateDir, joined.KeyPEM, joined.CertPEM); err != nil {
		return nil, nil, err
	}
	return id, joined.Managers, nil
}

// renew gets a new certificate for a new key over conn (authenticated by
// the current certificate) and saves it.
func (id *Identity) renew(ctx context.Context, stateDir string, conn grpc.ClientConnInterface) error {
	keyPEM, csrPEM, err := pki.NewKeyAndCSR(nil, nil)
	if err != nil {
		return err
	}
	defer clear(keyPEM)
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
	return atomicfile.WriteFile(filepath.Join(stateDir, managersFile), b, 0o600)
}
