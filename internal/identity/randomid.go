package identity

import (
	"crypto/rand"
	"encoding/base32"
)

// IDLength is the length of every ID NewID returns.
const IDLength = 25

// idEncoding is lowercase and has no padding, so IDs are safe in etcd keys,
// file names and certificate subjects.
var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// NewID returns a random 25-character lowercase ID, like swarm's: 125
// random bits, so IDs are safe to show and impossible to guess or collide.
func NewID() string {
	var b [16]byte
	// crypto/rand.Read never fails (Go 1.24+: it aborts the program
	// rather than return short randomness).
	rand.Read(b[:])
	return idEncoding.EncodeToString(b[:])[:IDLength]
}
