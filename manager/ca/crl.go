package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"
)

// Certificate revocation lists, x509 only. etcd's peer listener reads a
// CRL file (DER) at every accepted connection and refuses a certificate
// whose serial it lists: that is how a removed manager's certificate is
// kept off the raft port (see revocations.go for when the CRL is made).

// crlValidity is the NextUpdate of a CRL. etcd does not look at it; a
// new CRL replaces the old one at every revocation.
const crlValidity = rootValidity

// SignCRL returns a DER CRL, signed by the root, listing serials (hex).
// The root key must be in memory.
func (r *Root) SignCRL(serials []string, now time.Time) ([]byte, error) {
	if r.key == nil {
		return nil, fmt.Errorf("sign CRL: the CA key is not unsealed")
	}
	return signCRL(serials, now, r.Cert, r.key)
}

// PlaceholderCRL is an empty CRL signed by a throwaway key. A manager
// that has no CRL yet (joining, or upgraded from a version without one)
// starts its etcd member with it, because etcd refuses every peer when its
// CRL file is missing; the cluster's CRL replaces it as soon as the store
// is readable. etcd reads only the serials of a CRL, not its signature.
func PlaceholderCRL() ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "lockbox-placeholder-crl"},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(crlValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	issuer, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return signCRL(nil, now, issuer, key)
}

func signCRL(serials []string, now time.Time, issuer *x509.Certificate, key *ecdsa.PrivateKey) ([]byte, error) {
	entries := make([]x509.RevocationListEntry, 0, len(serials))
	for _, s := range serials {
		n, ok := new(big.Int).SetString(s, 16)
		if !ok {
			return nil, fmt.Errorf("sign CRL: serial %q is not hex", s)
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: now})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(now.UnixNano()),
		ThisUpdate:                now.Add(-clockSkew),
		NextUpdate:                now.Add(crlValidity),
		RevokedCertificateEntries: entries,
	}, issuer, key)
	if err != nil {
		return nil, fmt.Errorf("sign CRL: %w", err)
	}
	return der, nil
}
