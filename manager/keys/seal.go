package keys

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"

	"golang.org/x/crypto/nacl/secretbox"
)

const (
	// KeySize is the size of every key: DEKs, KEKs, the digest key.
	KeySize   = 32
	nonceSize = 24

	sealVersion = 0x01
	sealHeader  = 1 + 4 + nonceSize
	// SealOverhead is how much longer sealed data is than its plaintext.
	SealOverhead = sealHeader + secretbox.Overhead
)

var (
	// ErrLocked: the manager has no keyring yet (autolock, not unlocked).
	ErrLocked = errors.New("the manager is locked: run 'lockbox unlock' with the cluster's unlock key")
	// ErrCorrupt: sealed data or a wrapped keyring fails authentication or
	// does not parse. It never says more, so it leaks nothing.
	ErrCorrupt = errors.New("sealed data is corrupt or was tampered with")
	// ErrUnknownKey: sealed under a data key this keyring no longer has.
	ErrUnknownKey = errors.New("sealed under an unknown data key")
	// ErrWrongKey: the KEK (unlock key or key file) does not open the keyring.
	ErrWrongKey = errors.New("the key does not unlock this cluster's keyring")
)

// Keyring is the set of data keys a cluster needs: the current one, older
// ones still sealing some secrets until a rotation finishes, and the key
// of the keyed digests. It implements store.Sealer. Safe for concurrent use.
type Keyring struct {
	mu        sync.RWMutex
	current   uint32
	deks      map[uint32]*[KeySize]byte
	macKey    *[KeySize]byte
	unlockKey string // autolock only; "" otherwise
}

func randomKey() (*[KeySize]byte, error) {
	k, err := newLockedKey()
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(rand.Reader, k[:]); err != nil {
		freeLockedKey(k)
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

// NewKeyring returns a keyring with one fresh DEK (ID 1) and a fresh
// digest key.
func NewKeyring() (*Keyring, error) {
	dek, err := randomKey()
	if err != nil {
		return nil, err
	}
	mac, err := randomKey()
	if err != nil {
		freeLockedKey(dek)
		return nil, err
	}
	return &Keyring{current: 1, deks: map[uint32]*[KeySize]byte{1: dek}, macKey: mac}, nil
}

// Seal seals plaintext under the current DEK with a fresh random nonce.
func (k *Keyring) Seal(plaintext []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	dek := k.deks[k.current]
	if dek == nil {
		return nil, ErrLocked
	}
	out := make([]byte, sealHeader, sealHeader+len(plaintext)+secretbox.Overhead)
	out[0] = sealVersion
	binary.BigEndian.PutUint32(out[1:5], k.current)
	var nonce [nonceSize]byte
	if _, err := io.ReadFull(rand.Reader, nonce[:]); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	copy(out[5:], nonce[:])
	return secretbox.Seal(out, plaintext, &nonce, dek), nil
}

// Open authenticates and opens sealed data.
func (k *Keyring) Open(sealed []byte) ([]byte, error) {
	id, err := SealedKeyID(sealed)
	if err != nil {
		return nil, err
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.deks == nil {
		return nil, ErrLocked
	}
	dek := k.deks[id]
	if dek == nil {
		return nil, fmt.Errorf("open: data key %d: %w", id, ErrUnknownKey)
	}
	var nonce [nonceSize]byte
	copy(nonce[:], sealed[5:sealHeader])
	out, ok := secretbox.Open(nil, sealed[sealHeader:], &nonce, dek)
	if !ok {
		return nil, ErrCorrupt
	}
	return out, nil
}

// SealedKeyID returns the ID of the data key sealed was sealed under.
func SealedKeyID(sealed []byte) (uint32, error) {
	if len(sealed) < SealOverhead || sealed[0] != sealVersion {
		return 0, ErrCorrupt
	}
	return binary.BigEndian.Uint32(sealed[1:5]), nil
}

// NeedsReseal reports whether sealed is not under the current DEK.
func (k *Keyring) NeedsReseal(sealed []byte) bool {
	id, err := SealedKeyID(sealed)
	k.mu.RLock()
	defer k.mu.RUnlock()
	return err == nil && id != k.current
}

// Digest is "sha256:<hex>" of HMAC-SHA256 under the digest key: stable
// for equal data within a cluster, useless for guessing the data without
// the key.
func (k *Keyring) Digest(plaintext []byte) string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.macKey == nil {
		return ""
	}
	m := hmac.New(sha256.New, k.macKey[:])
	m.Write(plaintext)
	return "sha256:" + hex.EncodeToString(m.Sum(nil))
}

// CurrentKeyID is the ID of the DEK new seals use.
func (k *Keyring) CurrentKeyID() uint32 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.current
}

// KeyIDs returns the IDs of every DEK in the ring.
func (k *Keyring) KeyIDs() []uint32 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	ids := make([]uint32, 0, len(k.deks))
	for id := range k.deks {
		ids = append(ids, id)
	}
	return ids
}

// clone returns a deep copy, for building the next version of a ring
// without touching the one in use.
func (k *Keyring) clone() *Keyring {
	k.mu.RLock()
	defer k.mu.RUnlock()
	c := &Keyring{current: k.current, deks: make(map[uint32]*[KeySize]byte, len(k.deks)), unlockKey: k.unlockKey}
	for id, d := range k.deks {
		c.deks[id] = lockedCopy(d)
	}
	if k.macKey != nil {
		c.macKey = lockedCopy(k.macKey)
	}
	return c
}

func (k *Keyring) unlockKeyOf() (string, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.unlockKey, k.unlockKey != ""
}

// withNewDEK returns a copy whose current key is a fresh DEK.
func (k *Keyring) withNewDEK() (*Keyring, error) {
	c := k.clone()
	dek, err := randomKey()
	if err != nil {
		c.Close()
		return nil, err
	}
	var next uint32
	for id := range c.deks {
		next = max(next, id)
	}
	next++
	c.deks[next] = dek
	c.current = next
	return c, nil
}

// withoutOldDEKs returns a copy holding only the current DEK.
func (k *Keyring) withoutOldDEKs() *Keyring {
	c := k.clone()
	for id, d := range c.deks {
		if id != c.current {
			freeLockedKey(d)
			delete(c.deks, id)
		}
	}
	return c
}

// Close zeroes every key in the ring. The ring is unusable afterwards.
func (k *Keyring) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for id, d := range k.deks {
		freeLockedKey(d)
		delete(k.deks, id)
	}
	k.deks = nil
	if k.macKey != nil {
		freeLockedKey(k.macKey)
		k.macKey = nil
	}
	k.unlockKey = ""
}
