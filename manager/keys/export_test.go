package keys

import (
	"crypto/rand"
	"encoding/binary"
	"io"

	"golang.org/x/crypto/nacl/secretbox"
)

// SealV1ForTest seals plaintext as managers did before values were bound
// to their records (format 0x01, under the DEK itself), for tests that
// check such values still open and get rewritten.
func (m *Manager) SealV1ForTest(plaintext []byte) []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.ring.sealV1ForTest(plaintext)
}

func (k *Keyring) sealV1ForTest(plaintext []byte) []byte {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]byte, sealHeader)
	out[0] = sealV1
	binary.BigEndian.PutUint32(out[1:5], k.current)
	var nonce [nonceSize]byte
	if _, err := io.ReadFull(rand.Reader, nonce[:]); err != nil {
		panic(err)
	}
	copy(out[5:], nonce[:])
	return secretbox.Seal(out, plaintext, &nonce, k.deks[k.current])
}
