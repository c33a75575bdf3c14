package ca

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lockbox-project/lockbox/internal/identity"
	"github.com/lockbox-project/lockbox/manager/store"
	"github.com/lockbox-project/lockbox/pki"
	"github.com/lockbox-project/lockbox/pki/jointoken"
)

// Sealer seals data with the cluster data key before it reaches the store.
type Sealer interface {
	Seal(plaintext []byte) ([]byte, error)
	Open(sealed []byte) ([]byte, error)
}

// Errors a caller branches on.
var (
	ErrNotInitialized = errors.New("cluster CA is not initialised")
	ErrInvalidToken   = errors.New("invalid join token")
	ErrTokenOtherCA   = errors.New("join token is for another cluster (CA digest differs)")
	ErrRevoked        = errors.New("node certificate is revoked")
	ErrBadCSR         = errors.New("invalid certificate signing request")
	// ErrWrongRoleToken is a CSR that names addresses (only a manager's
	// does: only manager certificates carry them) with a worker token: a
	// manager joining with the wrong token. It is refused before a node
	// is recorded, so the failed join leaves no stray worker behind.
	ErrWrongRoleToken = errors.New("the certificate request names manager addresses but the token is a worker token: join managers with the token from 'lockbox join-token manager'")
)

// ErrAlreadyInitialized is returned by Save when the store holds a cluster.
var ErrAlreadyInitialized = errors.New("a cluster is already initialised in this etcd")

// CA is the root plus the cluster state it reads and writes through the
// store's cluster table: join tokens, revocations, issued serials, CRL.
type CA struct {
	*Root
	st     *store.Store
	sealer Sealer
	// ctx is Open's: it bounds the followers and subscriber pumps.
	ctx context.Context

	// Validity is the lifetime of issued node certificates.
	Validity time.Duration
	// now is the clock, replaced in tests.
	now func() time.Time

	// keyMu guards Root.key, unsealed on first use: a manager with
	// autolock serves TLS before it is unlocked, but signs nothing.
	keyMu     sync.Mutex
	sealedKey []byte

	mu      sync.RWMutex
	revoked map[string]struct{}
	subs    []*subscriber
}

// Save writes a new root, the cluster ID, fresh join tokens and an empty
// CRL to the store, only if no cluster exists there yet. It reports
// ErrAlreadyInitialized otherwise.
func Save(ctx context.Context, st *store.Store, sealer Sealer, root *Root) error {
	der, err := x509.MarshalECPrivateKey(root.key)
	if err != nil {
		return err
	}
	sealedKey, err := sealer.Seal(der)
	clear(der)
	if err != nil {
		return fmt.Errorf("seal CA key: %w", err)
	}
	var toks storedTokens
	if toks.Worker, err = jointoken.NewSecret(); err != nil {
		return err
	}
	if toks.Manager, err = jointoken.NewSecret(); err != nil {
		return err
	}
	sealedToks, err := sealTokens(sealer, toks)
	if err != nil {
		return err
	}
	crl, err := root.SignCRL(nil, time.Now())
	if err != nil {
		return err
	}
	err = st.InitCluster(ctx, store.ClusterInit{
		ID:               root.ClusterID,
		Root:             store.CARoot{CertPEM: root.CertPEM, SealedKey: sealedKey},
		SealedJoinTokens: sealedToks,
		CRL:              crl,
	})
	if errors.Is(err, store.ErrExists) {
		return ErrAlreadyInitialized
	}
	if err != nil {
		return fmt.Errorf("store CA: %w", err)
	}
	return nil
}

// Open loads the CA certificate and revocations from the store and starts
// following revocations until ctx ends. The private key is unsealed when
// first needed, so Open works on a manager that is still locked.
func Open(ctx context.Context, st *store.Store, sealer Sealer) (*CA, error) {
	cl, err := st.GetCluster(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNotInitialized
	}
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	cert, err := parseCertPEM(cl.Root.CertPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA: parse root: %w", err)
	}
	c := &CA{
		Root:      &Root{ClusterID: cl.ID, Cert: cert, CertPEM: cl.Root.CertPEM},
		sealedKey: cl.Root.SealedKey,
		st:        st,
		sealer:    sealer,
		ctx:       ctx,
		Validity:  DefaultValidity,
		now:       time.Now,
		revoked:   cl.Revoked,
	}
	go st.FollowRevocations(ctx, cl.Revision, c.markAllRevoked)
	return c, nil
}

// IssueWithToken signs a CSR for a new node, if the token is current.
func (c *CA) IssueWithToken(ctx context.Context, token string, csrPEM []byte) (pki.Identity, []byte, error) {
	role, err := c.CheckToken(ctx, token)
	if err != nil {
		return pki.Identity{}, nil, err
	}
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return pki.Identity{}, nil, err
	}
	if role != pki.RoleManager && (len(csr.DNSNames) > 0 || len(csr.IPAddresses) > 0) {
		return pki.Identity{}, nil, ErrWrongRoleToken
	}
	id := identity.NewID()
	return c.sign(ctx, id, role, csr)
}

// Renew signs a CSR for the holder of a valid certificate, keeping its node
// ID and role.
func (c *CA) Renew(ctx context.Context, who pki.Identity, csrPEM []byte) (pki.Identity, []byte, error) {
	if who.ClusterID != c.ClusterID {
		return pki.Identity{}, nil, fmt.Errorf("renew: certificate is for cluster %s", who.ClusterID)
	}
	if c.IsRevoked(who.NodeID) {
		return pki.Identity{}, nil, ErrRevoked
	}
	if who.Role != pki.RoleWorker && who.Role != pki.RoleManager {
		return pki.Identity{}, nil, fmt.Errorf("renew: role %s is not renewable", who.Role)
	}
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return pki.Identity{}, nil, err
	}
	return c.sign(ctx, who.NodeID, who.Role, csr)
}

// unseal opens the root key if it is not in memory yet.
func (c *CA) unseal() error {
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	if c.key != nil {
		return nil
	}
	der, err := c.sealer.Open(c.sealedKey)
	if err != nil {
		return fmt.Errorf("unseal CA key (manager locked?): %w", err)
	}
	defer clear(der)
	key, err := x509.ParseECPrivateKey(der)
	if err != nil {
		return fmt.Errorf("parse CA key: %w", err)
	}
	c.key = key
	return nil
}

// IssueKeyPair makes a key and certificate for a manager's own use or for
// admin credentials. A node's certificate (worker or manager) is recorded
// like any other it is issued, so revoking the node lists it.
func (c *CA) IssueKeyPair(ctx context.Context, req CertRequest) (KeyPair, error) {
	if err := c.unseal(); err != nil {
		return KeyPair{}, err
	}
	if req.NotBefore.IsZero() {
		req.NotBefore = c.now()
	}
	if req.Validity == 0 {
		req.Validity = c.Validity
	}
	kp, err := c.NewKeyPair(req)
	if err != nil || req.Role == pki.RoleAdmin {
		return kp, err
	}
	cert, err := parseCertPEM(kp.CertPEM)
	if err == nil {
		err = c.record(ctx, req.NodeID, cert)
	}
	if err != nil {
		clear(kp.KeyPEM)
		return KeyPair{}, err
	}
	return kp, nil
}

func parseCertPEM(p []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(p)
	if block == nil {
		return nil, errors.New("certificate is not PEM")
	}
	return x509.ParseCertificate(block.Bytes)
}

func (c *CA) sign(ctx context.Context, nodeID string, role pki.Role, csr *x509.CertificateRequest) (pki.Identity, []byte, error) {
	if err := c.unseal(); err != nil {
		return pki.Identity{}, nil, err
	}
	req := CertRequest{NodeID: nodeID, Role: role, PublicKey: csr.PublicKey, NotBefore: c.now(), Validity: c.Validity}
	if role == pki.RoleManager {
		req.DNSNames, req.IPs = csr.DNSNames, csr.IPAddresses
	}
	certPEM, cert, err := c.Sign(req)
	if err != nil {
		return pki.Identity{}, nil, err
	}
	// Recorded before it is handed out: a certificate the store refused
	// (the node was revoked meanwhile) never leaves.
	if err := c.record(ctx, nodeID, cert); err != nil {
		return pki.Identity{}, nil, err
	}
	id, err := pki.IdentityFromCert(cert)
	return id, certPEM, err
}

// Reseal re-seals the CA key and join tokens under the current data key
// when needs says their sealed form uses an old one. The daemon runs it
// with the store's Reseal during a data-key rotation.
func (c *CA) Reseal(ctx context.Context, needs func(sealed []byte) bool) (int, error) {
	cl, err := c.st.GetCluster(ctx)
	if err != nil {
		return 0, fmt.Errorf("reseal CA: %w", err)
	}
	n := 0
	if needs(cl.Root.SealedKey) {
		root := cl.Root
		if root.SealedKey, err = c.reseal(root.SealedKey); err != nil {
			return n, err
		}
		if err := casResult(c.st.SwapCARoot(ctx, root, cl.RootVersion))("CA key"); err != nil {
			return n, err
		}
		c.keyMu.Lock()
		c.sealedKey = root.SealedKey
		c.keyMu.Unlock()
		n++
	}
	toks, ver, err := c.st.JoinTokens(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return n, nil
	}
	if err != nil {
		return n, fmt.Errorf("reseal CA: %w", err)
	}
	if needs(toks) {
		sealed, err := c.reseal(toks)
		if err != nil {
			return n, err
		}
		if err := casResult(c.st.SwapJoinTokens(ctx, sealed, ver))("join tokens"); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// casResult turns a compare-and-swap outcome into an error: a value that
// changed meanwhile is for the next pass of the rotation.
func casResult(ok bool, err error) func(what string) error {
	return func(what string) error {
		if err != nil {
			return fmt.Errorf("reseal %s: %w", what, err)
		}
		if !ok {
			return fmt.Errorf("reseal %s: changed concurrently; retry", what)
		}
		return nil
	}
}

func (c *CA) reseal(sealed []byte) ([]byte, error) {
	plain, err := c.sealer.Open(sealed)
	if err != nil {
		return nil, fmt.Errorf("reseal CA: open: %w", err)
	}
	defer clear(plain)
	return c.sealer.Seal(plain)
}
