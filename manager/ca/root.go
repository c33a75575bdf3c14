package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/lockbox-project/lockbox/internal/identity"
	"github.com/lockbox-project/lockbox/pki"
	"github.com/lockbox-project/lockbox/pki/jointoken"
)

// This file is x509 only: the root, signing, CSRs. Nothing here reads or
// writes cluster state.

// DefaultValidity is the lifetime of node certificates.
const DefaultValidity = 90 * 24 * time.Hour

// rootValidity is long: rotating the root is not supported yet, and every
// token pins it.
const rootValidity = 20 * 365 * 24 * time.Hour

// clockSkew backdates certificates so that a node whose clock is a little
// behind does not refuse a fresh one.
const clockSkew = 5 * time.Minute

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
