package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockbox-project/lockbox/internal/identity"
	"github.com/lockbox-project/lockbox/manager/store"
	"github.com/lockbox-project/lockbox/pki"
	"github.com/lockbox-project/lockbox/pki/jointoken"
)

// Sealer seals data with the cluster data key before it reaches the store,
// bound to the record it is stored in (manager/keys' Manager, the same
// contract as store.Sealer): a value sealed with one ad opens only with
// the same ad. The ad of each record comes from the store, which owns the
// key layout (Store.CAKeyAD, Store.JoinTokensAD), so a sealed value copied
// from one record into another with a raw etcd write does not open.
type Sealer interface {
	SealRecord(plaintext, ad []byte) ([]byte, error)
	OpenRecord(sealed, ad []byte) ([]byte, error)
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

// ErrRolledBack: the store holds an older sealed CA key or join tokens
// than this manager has already seen (an unbound value after a bound one,
// or an earlier tokens generation): a copy put back from an old backup or
// by someone writing to etcd directly. It is refused, so a rotated-out
// join token does not come back.
var ErrRolledBack = errors.New("the CA key or join tokens in the store are older than ones this manager has seen (put back from an old copy?): refused")

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
	// autolock serves TLS before it is unlocked, but signs nothing; and
	// the sealed key as last read or written. keyBound is false only
	// while the store holds a key sealed before sealed values were bound
	// (store.CARoot.KeyBound); once true it stays true, and an unbound
	// key read later is refused (ErrRolledBack). rootVersion is the
	// root record's version sealedKey was read at.
	keyMu       sync.Mutex
	sealedKey   []byte
	keyBound    bool
	rootVersion int64

	// tokensFloor is the highest join-tokens generation this CA has
	// opened or written: an older one read later is refused.
	tokensFloor atomic.Uint64

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
	sealedKey, err := sealer.SealRecord(der, st.CAKeyAD())
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
	sealedToks, err := sealTokens(sealer, st, 1, toks)
	if err != nil {
		return err
	}
	crl, err := root.SignCRL(nil, time.Now())
	if err != nil {
		return err
	}
	err = st.InitCluster(ctx, store.ClusterInit{
		ID:         root.ClusterID,
		Root:       store.CARoot{CertPEM: root.CertPEM, SealedKey: sealedKey, KeyBound: true},
		JoinTokens: sealedToks,
		CRL:        crl,
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
		Root:        &Root{ClusterID: cl.ID, Cert: cert, CertPEM: cl.Root.CertPEM},
		sealedKey:   cl.Root.SealedKey,
		keyBound:    cl.Root.KeyBound,
		rootVersion: cl.RootVersion,
		st:          st,
		sealer:      sealer,
		ctx:         ctx,
		Validity:    DefaultValidity,
		now:         time.Now,
		revoked:     cl.Revoked,
	}
	go st.FollowRevocations(ctx, cl.Revision, c.markAllRevoked)
	return c, nil
}

// IssueWithToken signs a CSR for a new node, if the token is current. A
// manager token is consumed by the join (see tokens.go): it is replaced
// before the certificate is signed, in the compare-and-swap that checked
// it, and refused from then on.
func (c *CA) IssueWithToken(ctx context.Context, token string, csrPEM []byte) (pki.Identity, []byte, error) {
	tok, err := c.parseToken(token)
	if err != nil {
		return pki.Identity{}, nil, err
	}
	for {
		t, gen, version, err := c.tokens(ctx)
		if err != nil {
			return pki.Identity{}, nil, err
		}
		role, err := t.roleOf(tok)
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
		if role == pki.RoleManager {
			// Unsealed first: a locked manager, which cannot sign,
			// must not burn the token.
			if err := c.unseal(ctx); err != nil {
				return pki.Identity{}, nil, err
			}
			ok, err := c.consumeManager(ctx, t, gen, version, id)
			if err != nil {
				return pki.Identity{}, nil, err
			}
			if !ok {
				continue // the tokens changed meanwhile: check again
			}
		}
		return c.sign(ctx, id, role, csr)
	}
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

// unseal opens the root key if it is not in memory yet. A key sealed
// before sealed values were bound is written back bound.
func (c *CA) unseal(ctx context.Context) error {
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	if c.key != nil {
		return nil
	}
	der, err := c.openKey(c.sealedKey, c.keyBound)
	if err != nil {
		return err
	}
	defer clear(der)
	key, err := x509.ParseECPrivateKey(der)
	if err != nil {
		return fmt.Errorf("parse CA key: %w", err)
	}
	// The key must be the root certificate's: anything else signs
	// certificates no node trusts.
	if pub, ok := c.Cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return errors.New("the sealed CA key does not match the root certificate")
	}
	c.key = key
	if !c.keyBound {
		c.bindKey(ctx, der)
	}
	return nil
}

// openKey opens a sealed CA key: bound to the root record, or (only while
// this CA has seen no bound key) sealed with an empty AD before sealed
// values were bound.
func (c *CA) openKey(sealed []byte, bound bool) ([]byte, error) {
	var ad []byte
	switch {
	case bound:
		ad = c.st.CAKeyAD()
	case c.keyBound:
		return nil, fmt.Errorf("unseal CA key: %w", ErrRolledBack)
	}
	der, err := c.sealer.OpenRecord(sealed, ad)
	if err != nil {
		return nil, fmt.Errorf("unseal CA key (manager locked?): %w", err)
	}
	return der, nil
}

// bindKey writes the CA key (der) back sealed bound to the root record,
// if the record is still the unbound one this CA read; keyMu is held. It
// is best effort: when it fails (another manager wrote the root first,
// or etcd is unreachable), the key still opens unbound, and the next
// unseal or the data-key rotation's Reseal binds it.
func (c *CA) bindKey(ctx context.Context, der []byte) {
	sealed, err := c.sealer.SealRecord(der, c.st.CAKeyAD())
	if err != nil {
		return
	}
	root := store.CARoot{CertPEM: c.CertPEM, SealedKey: sealed, KeyBound: true}
	if ok, err := c.st.SwapCARoot(ctx, root, c.rootVersion); err == nil && ok {
		c.sealedKey, c.keyBound = sealed, true
	}
}

// IssueKeyPair makes a key and certificate for a manager's own use or for
// admin credentials. A node's certificate (worker or manager) is recorded
// like any other it is issued, so revoking the node lists it.
func (c *CA) IssueKeyPair(ctx context.Context, req CertRequest) (KeyPair, error) {
	if err := c.unseal(ctx); err != nil {
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
	if err := c.unseal(ctx); err != nil {
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
// when needs says their sealed form uses an old one, and binds them to
// their records if they were sealed before sealed values were bound. The
// daemon runs it with the store's Reseal during a data-key rotation.
func (c *CA) Reseal(ctx context.Context, needs func(sealed []byte) bool) (int, error) {
	cl, err := c.st.GetCluster(ctx)
	if err != nil {
		return 0, fmt.Errorf("reseal CA: %w", err)
	}
	n := 0
	if needs(cl.Root.SealedKey) || !cl.Root.KeyBound {
		if err := c.resealKey(ctx, cl.Root, cl.RootVersion); err != nil {
			return n, err
		}
		n++
	}
	floor := c.tokensFloor.Load()
	toks, ver, err := c.st.JoinTokens(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return n, nil
	}
	if err != nil {
		return n, fmt.Errorf("reseal CA: %w", err)
	}
	if needs(toks.Sealed) || !toks.Bound() {
		plain, err := c.openTokens(toks, floor)
		if err != nil {
			return n, fmt.Errorf("reseal CA: %w", err)
		}
		next, err := sealTokenBytes(c.sealer, c.st, toks.Generation+1, plain)
		clear(plain)
		if err != nil {
			return n, err
		}
		if err := casResult(c.st.SwapJoinTokens(ctx, next, ver))("join tokens"); err != nil {
			return n, err
		}
		c.raiseTokensFloor(next.Generation)
		n++
	}
	return n, nil
}

// resealKey writes root's key back sealed, bound, under the current data
// key, if the root record is still at version.
func (c *CA) resealKey(ctx context.Context, root store.CARoot, version int64) error {
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	der, err := c.openKey(root.SealedKey, root.KeyBound)
	if err != nil {
		return fmt.Errorf("reseal CA: %w", err)
	}
	sealed, err := c.sealer.SealRecord(der, c.st.CAKeyAD())
	clear(der)
	if err != nil {
		return fmt.Errorf("reseal CA: seal: %w", err)
	}
	root.SealedKey, root.KeyBound = sealed, true
	if err := casResult(c.st.SwapCARoot(ctx, root, version))("CA key"); err != nil {
		return err
	}
	c.sealedKey, c.keyBound = sealed, true
	return nil
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
