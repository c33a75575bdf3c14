// Package jointoken formats and parses Lockbox join tokens,
// "LBXTKN-1-<ca digest>-<secret>", and computes the CA digest a joiner pins.
//
// It holds no key material and imports only the standard library, so the node
// agent can use it without linking the manager (it lives under pki, beside the rest of the node side of the PKI).
package jointoken

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Prefix starts every version-1 token.
const Prefix = "LBXTKN-1-"

// secretLen is the number of random bytes behind a token secret: 256 bits
// leave nothing to guess.
const secretLen = 32

// secretEncoding has no padding and no '-', so the token splits cleanly.
var secretEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// ErrMalformed is returned for a string that is not a version-1 token.
var ErrMalformed = errors.New("malformed join token: want LBXTKN-1-<ca digest>-<secret>")

// Token is a parsed join token.
type Token struct {
	// CADigest is the lowercase hex SHA-256 of the root CA certificate (DER).
	CADigest string
	// Secret authorises the join; it decides the role the joiner gets.
	Secret string
}

// String formats the token.
func (t Token) String() string { return Prefix + t.CADigest + "-" + t.Secret }

// Redacted is the token with its secret hidden, for logs.
func (t Token) Redacted() string {
	return Prefix + t.CADigest + "-" + strings.Repeat("*", 8)
}

// Digest returns the digest of a DER-encoded root CA certificate, as it
// appears in a token.
func Digest(caDER []byte) string {
	sum := sha256.Sum256(caDER)
	return hex.EncodeToString(sum[:])
}

// NewSecret returns a fresh random token secret.
func NewSecret() (string, error) {
	b := make([]byte, secretLen)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate join token secret: %w", err)
	}
	return secretEncoding.EncodeToString(b), nil
}

// Parse splits a token into its digest and secret and checks their shape.
// It does not say whether the secret is current: only the CA knows that.
func Parse(s string) (Token, error) {
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return Token{}, ErrMalformed
	}
	digest, secret, ok := strings.Cut(rest, "-")
	if !ok || len(digest) != hex.EncodedLen(sha256.Size) || secret == "" {
		return Token{}, ErrMalformed
	}
	if _, err := hex.DecodeString(digest); err != nil || strings.ToLower(digest) != digest {
		return Token{}, ErrMalformed
	}
	raw, err := secretEncoding.DecodeString(secret)
	if err != nil || len(raw) != secretLen {
		return Token{}, ErrMalformed
	}
	return Token{CADigest: digest, Secret: secret}, nil
}

// PinsCA reports whether the token names the given root CA certificate.
// A joiner calls it on the certificate it fetched before trusting it.
func (t Token) PinsCA(caDER []byte) bool {
	return subtle.ConstantTimeCompare([]byte(t.CADigest), []byte(Digest(caDER))) == 1
}

// SecretEqual compares the token's secret with want in constant time.
func (t Token) SecretEqual(want string) bool {
	return subtle.ConstantTimeCompare([]byte(t.Secret), []byte(want)) == 1
}
