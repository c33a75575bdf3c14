package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
)

// ErrNoRoot is a root CA PEM with no certificate in it.
var ErrNoRoot = errors.New("no certificate in the root CA PEM")

// RootPool parses a root CA PEM into a pool holding it alone.
func RootPool(rootPEM []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootPEM) {
		return nil, ErrNoRoot
	}
	return pool, nil
}

// ClientTLS is the one configuration for dialling a manager: TLS 1.3, the
// cluster's root as the only trust anchor, and the manager verified by
// ManagerDNSName, which the CA gives to manager certificates only (so a
// worker's certificate cannot pose as a manager, and any of a manager's
// addresses may be dialled).
//
// own, when not nil, is asked for the client certificate at every
// handshake, so a renewed certificate is used at once; nil dials without
// one (a joining node, before it has a certificate).
func ClientTLS(root *x509.CertPool, own func() *tls.Certificate) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    root,
		ServerName: ManagerDNSName,
	}
	if own != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return own(), nil
		}
	}
	return cfg
}

// ClientTLSFromPEM is ClientTLS for a root CA PEM and a fixed certificate.
func ClientTLSFromPEM(rootPEM []byte, own tls.Certificate) (*tls.Config, error) {
	pool, err := RootPool(rootPEM)
	if err != nil {
		return nil, err
	}
	return ClientTLS(pool, func() *tls.Certificate { return &own }), nil
}

// certDER returns the DER bytes of the first PEM block if it is a
// certificate.
func certDER(p []byte) ([]byte, bool) {
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, false
	}
	return b.Bytes, true
}
