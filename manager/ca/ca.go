package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lockbox-project/lockbox/internal/identity"
	"github.com/lockbox-project/lockbox/pki"
	"github.com/lockbox-project/lockbox/pki/jointoken"
)

// Keys in etcd.
const (
	ClusterIDKey  = "/lockbox/cluster/id"
	rootKey       = "/lockbox/cluster/ca/root"
	tokensKey     = "/lockbox/cluster/ca/tokens"
	RevokedPrefix = "/lockbox/cluster/revoked/"
)

// DefaultValidity is the lifetime of node certificates.
const DefaultValidity = 90 * 24 * time.Hour

// rootValidity is long: rotating the root is not supported yet, and every
// token pins it.
const rootValidity = 20 * 365 * 24 * time.Hour

// clockSkew backdates certificates so that a node whose clock is a little
// behind does not refuse a fresh one.
const clockSkew = 5 * time.Minute

// Sealer seals data with the cluster data key before it reaches etcd.
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

// Root is the CA certificate and its key, in memory only.
type Root struct {
	ClusterID string
	Cert      *x509.Certificate
	CertPEM   []byte
	key       *ecdsa.PrivateKey
}

// NewRoot creates a new cluster ID and root CA.
func NewRoot() (*Root, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate root key: %w", err)
	}
	clusterID := identity.NewID()
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "lockbox-root-ca", Organization: []string{clusterID}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(rootValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Root{
		ClusterID: clusterID,
		Cert:      cert,
		CertPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:       key,
	}, nil
}

// Digest is the root's digest as it appears in join tokens.
func (r *Root) Digest() string { return jointoken.Digest(r.Cert.Raw) }

// Pool returns a pool holding only the root.
func (r *Root) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(r.Cert)
	return p
}

// CertRequest says what certificate to sign.
type CertRequest struct {
	NodeID    string
	Role      pki.Role
	PublicKey crypto.PublicKey
	// DNSNames and IPs are honoured for managers only: they are what other
	// managers and etcd peers dial.
	DNSNames []string
	IPs      []net.IP
	// NotBefore defaults to now; Validity to DefaultValidity.
	NotBefore time.Time
	Validity  time.Duration
}

// Sign issues a certificate for req.
func (r *Root) Sign(req CertRequest) ([]byte, *x509.Certificate, error) {
	if req.NodeID == "" {
		return nil, nil, errors.New("sign: empty node ID")
	}
	if r.key == nil {
		return nil, nil, errors.New("sign: the CA key is not unsealed")
	}
	if err := checkPublicKey(req.PublicKey); err != nil {
		return nil, nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	start := req.NotBefore
	if start.IsZero() {
		start = time.Now()
	}
	validity := req.Validity
	if validity == 0 {
		validity = DefaultValidity
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         req.NodeID,
			OrganizationalUnit: []string{req.Role.String()},
			Organization:       []string{r.ClusterID},
		},
		NotBefore:             start.Add(-clockSkew),
		NotAfter:              start.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if req.Role == pki.RoleManager {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.DNSNames = append([]string{pki.ManagerDNSName}, req.DNSNames...)
		tmpl.IPAddresses = req.IPs
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.Cert, req.PublicKey, r.key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate for %s: %w", req.NodeID, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert, nil
}

// KeyPair is a PEM certificate and its PEM private key.
type KeyPair struct {
	CertPEM, KeyPEM []byte
}

// TLSCertificate parses the pair for crypto/tls.
func (k KeyPair) TLSCertificate() (tls.Certificate, error) {
	return tls.X509KeyPair(k.CertPEM, k.KeyPEM)
}

// NewKeyPair generates a key and signs a certificate for it: used for the
// manager's own certificate and for admin credentials, whose keys are made
// where they are used.
func (r *Root) NewKeyPair(req CertRequest) (KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate key: %w", err)
	}
	req.PublicKey = &key.PublicKey
	certPEM, _, err := r.Sign(req)
	if err != nil {
		return KeyPair{}, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return KeyPair{}, err
	}
	return KeyPair{CertPEM: certPEM, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})}, nil
}

func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
	case ed25519.PublicKey:
		return nil
	}
	return fmt.Errorf("%w: key must be ECDSA P-256/P-384 or Ed25519", ErrBadCSR)
}

// ParseCSR decodes a PEM CSR and checks its signature and key type.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: not a PEM CERTIFICATE REQUEST", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadCSR, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	return csr, nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

// storedRoot is the JSON at rootKey.
type storedRoot struct {
	CertPEM   []byte `json:"cert_pem"`
	SealedKey []byte `json:"sealed_key"`
}

// storedTokens is the plaintext sealed at tokensKey.
type storedTokens struct {
	Worker  string `json:"worker"`
	Manager string `json:"manager"`
}

// CA is the root plus its etcd-held state: tokens and revocations.
type CA struct {
	*Root
	cli    *clientv3.Client
	sealer Sealer

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
	subs    []chan<- string
}

// Save writes a new root, the cluster ID and fresh join tokens to etcd, only
// if no cluster exists there yet. It reports ErrAlreadyInitialized otherwise.
func Save(ctx context.Context, cli *clientv3.Client, sealer Sealer, root *Root) error {
	der, err := x509.MarshalECPrivateKey(root.key)
	if err != nil {
		return err
	}
	sealedKey, err := sealer.Seal(der)
	clear(der)
	if err != nil {
		return fmt.Errorf("seal CA key: %w", err)
	}
	rootJSON, err := json.Marshal(storedRoot{CertPEM: root.CertPEM, SealedKey: sealedKey})
	if err != nil {
		return err
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
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(ClusterIDKey), "=", 0)).
		Then(
			clientv3.OpPut(ClusterIDKey, root.ClusterID),
			clientv3.OpPut(rootKey, string(rootJSON)),
			clientv3.OpPut(tokensKey, string(sealedToks)),
		).Commit()
	if err != nil {
		return fmt.Errorf("store CA: %w", err)
	}
	if !resp.Succeeded {
		return ErrAlreadyInitialized
	}
	return nil
}

// ErrAlreadyInitialized is returned by Save when etcd holds a cluster.
var ErrAlreadyInitialized = errors.New("a cluster is already initialised in this etcd")

func sealTokens(s Sealer, t storedTokens) ([]byte, error) {
	plain, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	sealed, err := s.Seal(plain)
	clear(plain)
	if err != nil {
		return nil, fmt.Errorf("seal join tokens: %w", err)
	}
	return sealed, nil
}

// Open loads the CA certificate and revocations from etcd and starts
// following revocations until ctx ends. The private key is unsealed when
// first needed, so Open works on a manager that is still locked.
func Open(ctx context.Context, cli *clientv3.Client, sealer Sealer) (*CA, error) {
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(ClusterIDKey),
		clientv3.OpGet(rootKey),
		clientv3.OpGet(RevokedPrefix, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	ids, roots, revs := resp.Responses[0].GetResponseRange(), resp.Responses[1].GetResponseRange(), resp.Responses[2].GetResponseRange()
	if len(ids.Kvs) == 0 || len(roots.Kvs) == 0 {
		return nil, ErrNotInitialized
	}
	var sr storedRoot
	if err := json.Unmarshal(roots.Kvs[0].Value, &sr); err != nil {
		return nil, fmt.Errorf("load CA: decode root: %w", err)
	}
	block, _ := pem.Decode(sr.CertPEM)
	if block == nil {
		return nil, errors.New("load CA: root certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load CA: parse root: %w", err)
	}
	c := &CA{
		Root:      &Root{ClusterID: string(ids.Kvs[0].Value), Cert: cert, CertPEM: sr.CertPEM},
		sealedKey: sr.SealedKey,
		cli:       cli,
		sealer:    sealer,
		Validity:  DefaultValidity,
		now:       time.Now,
		revoked:   map[string]struct{}{},
	}
	for _, kv := range revs.Kvs {
		c.revoked[strings.TrimPrefix(string(kv.Key), RevokedPrefix)] = struct{}{}
	}
	go c.followRevocations(ctx, resp.Header.Revision+1)
	return c, nil
}

// followRevocations keeps the in-memory revoked set current, so that a node
// revoked through any manager is refused by every manager.
func (c *CA) followRevocations(ctx context.Context, rev int64) {
	for ctx.Err() == nil {
		wch := c.cli.Watch(clientv3.WithRequireLeader(ctx), RevokedPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
		for wr := range wch {
			if err := wr.Err(); err != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypePut {
					c.markRevoked(strings.TrimPrefix(string(ev.Kv.Key), RevokedPrefix))
				}
				rev = ev.Kv.ModRevision + 1
			}
		}
		// The watch broke (leader lost or compaction): reload the full set.
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		resp, err := c.cli.Get(ctx, RevokedPrefix, clientv3.WithPrefix())
		if err != nil {
			continue
		}
		for _, kv := range resp.Kvs {
			c.markRevoked(strings.TrimPrefix(string(kv.Key), RevokedPrefix))
		}
		rev = resp.Header.Revision + 1
	}
}

func (c *CA) markRevoked(nodeID string) {
	c.mu.Lock()
	_, had := c.revoked[nodeID]
	c.revoked[nodeID] = struct{}{}
	subs := c.subs
	c.mu.Unlock()
	if had {
		return
	}
	for _, ch := range subs {
		select {
		case ch <- nodeID:
		default:
		}
	}
}

// SubscribeRevocations sends each newly revoked node ID to ch (dropping it
// if ch is full: IsRevoked stays the authority).
func (c *CA) SubscribeRevocations(ch chan<- string) {
	c.mu.Lock()
	c.subs = append(c.subs, ch)
	c.mu.Unlock()
}

// IsRevoked reports whether nodeID was revoked.
func (c *CA) IsRevoked(nodeID string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.revoked[nodeID]
	return ok
}

// Revoke refuses nodeID from now on, on every manager.
func (c *CA) Revoke(ctx context.Context, nodeID string) error {
	if nodeID == "" {
		return errors.New("revoke: empty node ID")
	}
	if _, err := c.cli.Put(ctx, RevokedPrefix+nodeID, c.now().UTC().Format(time.RFC3339)); err != nil {
		return fmt.Errorf("revoke node %s: %w", nodeID, err)
	}
	c.markRevoked(nodeID)
	return nil
}

func (c *CA) tokens(ctx context.Context) (storedTokens, int64, error) {
	resp, err := c.cli.Get(ctx, tokensKey)
	if err != nil {
		return storedTokens{}, 0, fmt.Errorf("read join tokens: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return storedTokens{}, 0, ErrNotInitialized
	}
	plain, err := c.sealer.Open(resp.Kvs[0].Value)
	if err != nil {
		return storedTokens{}, 0, fmt.Errorf("unseal join tokens: %w", err)
	}
	defer clear(plain)
	var t storedTokens
	if err := json.Unmarshal(plain, &t); err != nil {
		return storedTokens{}, 0, fmt.Errorf("decode join tokens: %w", err)
	}
	return t, resp.Kvs[0].ModRevision, nil
}

// JoinToken returns the current token for role (worker or manager),
// rotating it first when rotate is set: the old token is refused from then
// on.
func (c *CA) JoinToken(ctx context.Context, role pki.Role, rotate bool) (string, error) {
	if role != pki.RoleWorker && role != pki.RoleManager {
		return "", fmt.Errorf("join token: no token for role %s", role)
	}
	for {
		t, rev, err := c.tokens(ctx)
		if err != nil {
			return "", err
		}
		if rotate {
			s, err := jointoken.NewSecret()
			if err != nil {
				return "", err
			}
			if role == pki.RoleWorker {
				t.Worker = s
			} else {
				t.Manager = s
			}
			sealed, err := sealTokens(c.sealer, t)
			if err != nil {
				return "", err
			}
			resp, err := c.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.ModRevision(tokensKey), "=", rev)).
				Then(clientv3.OpPut(tokensKey, string(sealed))).Commit()
			if err != nil {
				return "", fmt.Errorf("rotate join token: %w", err)
			}
			if !resp.Succeeded {
				continue // rotated concurrently; redo on the new value
			}
		}
		secret := t.Worker
		if role == pki.RoleManager {
			secret = t.Manager
		}
		return jointoken.Token{CADigest: c.Digest(), Secret: secret}.String(), nil
	}
}

// CheckToken returns the role a join token grants.
func (c *CA) CheckToken(ctx context.Context, token string) (pki.Role, error) {
	tok, err := jointoken.Parse(token)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if !tok.PinsCA(c.Cert.Raw) {
		return 0, ErrTokenOtherCA
	}
	t, _, err := c.tokens(ctx)
	if err != nil {
		return 0, err
	}
	// Check both in constant time, whichever matches.
	w, m := tok.SecretEqual(t.Worker), tok.SecretEqual(t.Manager)
	switch {
	case m:
		return pki.RoleManager, nil
	case w:
		return pki.RoleWorker, nil
	}
	return 0, fmt.Errorf("%w: the token is not current (rotated?)", ErrInvalidToken)
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
	return c.sign(identity.NewID(), role, csr)
}

// Renew signs a CSR for the holder of a valid certificate, keeping its node
// ID and role.
func (c *CA) Renew(who pki.Identity, csrPEM []byte) (pki.Identity, []byte, error) {
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
	return c.sign(who.NodeID, who.Role, csr)
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
// admin credentials.
func (c *CA) IssueKeyPair(req CertRequest) (KeyPair, error) {
	if err := c.unseal(); err != nil {
		return KeyPair{}, err
	}
	if req.NotBefore.IsZero() {
		req.NotBefore = c.now()
	}
	if req.Validity == 0 {
		req.Validity = c.Validity
	}
	return c.NewKeyPair(req)
}

// Reseal re-seals the CA key and join tokens under the current data key
// when needs says their sealed form uses an old one. The daemon runs it
// with the store's Reseal during a data-key rotation.
func (c *CA) Reseal(ctx context.Context, needs func(sealed []byte) bool) (int, error) {
	resp, err := c.cli.Txn(ctx).Then(clientv3.OpGet(rootKey), clientv3.OpGet(tokensKey)).Commit()
	if err != nil {
		return 0, fmt.Errorf("reseal CA: %w", err)
	}
	n := 0
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		var sr storedRoot
		if err := json.Unmarshal(kvs[0].Value, &sr); err != nil {
			return n, fmt.Errorf("reseal CA: %w", err)
		}
		if needs(sr.SealedKey) {
			if sr.SealedKey, err = c.reseal(sr.SealedKey); err != nil {
				return n, err
			}
			val, err := json.Marshal(sr)
			if err != nil {
				return n, err
			}
			if err := c.casPut(ctx, rootKey, kvs[0].ModRevision, val); err != nil {
				return n, err
			}
			c.keyMu.Lock()
			c.sealedKey = sr.SealedKey
			c.keyMu.Unlock()
			n++
		}
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) == 1 && needs(kvs[0].Value) {
		sealed, err := c.reseal(kvs[0].Value)
		if err != nil {
			return n, err
		}
		if err := c.casPut(ctx, tokensKey, kvs[0].ModRevision, sealed); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (c *CA) reseal(sealed []byte) ([]byte, error) {
	plain, err := c.sealer.Open(sealed)
	if err != nil {
		return nil, fmt.Errorf("reseal CA: open: %w", err)
	}
	defer clear(plain)
	return c.sealer.Seal(plain)
}

func (c *CA) casPut(ctx context.Context, key string, rev int64, val []byte) error {
	resp, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(val))).Commit()
	if err != nil {
		return fmt.Errorf("reseal %s: %w", key, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("reseal %s: changed concurrently; retry", key)
	}
	return nil
}

func (c *CA) sign(nodeID string, role pki.Role, csr *x509.CertificateRequest) (pki.Identity, []byte, error) {
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
	id, err := pki.IdentityFromCert(cert)
	return id, certPEM, err
}

// VerifyPeer is the check every TLS handshake with a client certificate
// runs after chain verification: same cluster, a known role, not revoked.
func (c *CA) VerifyPeer(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 {
		return nil // no client certificate: only unauthenticated calls allowed
	}
	id, err := pki.IdentityFromCert(cs.VerifiedChains[0][0])
	if err != nil {
		return err
	}
	if id.ClusterID != c.ClusterID {
		return fmt.Errorf("certificate of node %s is for cluster %s", id.NodeID, id.ClusterID)
	}
	if c.IsRevoked(id.NodeID) {
		return fmt.Errorf("node %s: %w", id.NodeID, ErrRevoked)
	}
	return nil
}

// ServerTLS returns the TLS configuration of a manager's listener: its own
// certificate (asked for at every handshake, so a renewed one is used at
// once), client certificates optional (joining nodes have none yet) but
// verified against the root and checked for revocation when present.
func (c *CA) ServerTLS(own func() *tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return own(), nil
		},
		ClientAuth:       tls.VerifyClientCertIfGiven,
		ClientCAs:        c.Pool(),
		VerifyConnection: c.VerifyPeer,
	}
}

// NeedsRenewal reports whether a certificate has less than a third of its
// lifetime left, the point where nodes and managers renew.
func NeedsRenewal(cert *x509.Certificate, now time.Time) bool {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotAfter.Sub(now) < life/3
}

// SameRoot reports whether pemBytes holds this CA's root certificate.
func (r *Root) SameRoot(pemBytes []byte) bool {
	block, _ := pem.Decode(pemBytes)
	return block != nil && bytes.Equal(block.Bytes, r.Cert.Raw)
}
