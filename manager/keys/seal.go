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

	// sealV1 values are sealed under the DEK itself and bound to nothing:
	// they are still opened, so clusters sealed before v2 keep working,
	// and re-sealed (NeedsReseal) by the next data-key rotation.
	sealV1 = 0x01
	// sealV2 values are bound to the record they seal (see recordKey).
	sealV2     = 0x02
	sealHeader = 1 + 4 + nonceSize
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

// Binding a sealed value to its record.
//
// A value sealed for one record (say secretdata/A) must not open as
// another's (secretdata/B) when someone with write access to etcd copies
// it there. secretbox takes no associated data, so the record is bound by
// the key instead: each value is sealed under
//
//	recordKey = HMAC-SHA256(DEK, "lockbox seal v2\x00" || ad)
//
// where ad names the record (the store passes its key, such as
// "secretdata/<id>"). A value moved to another record is opened under
// another key and fails Poly1305 authentication: the same ErrCorrupt as
// any other tampering, with no separate comparison to get right.
// Authenticating ad inside the sealed plaintext instead would lengthen
// every value, add a plaintext copy to zero, and need a constant-time
// compare after opening; deriving the key costs one HMAC per seal or
// open and changes nothing else (HMAC-SHA256 keyed by the DEK is a PRF,
// so record keys are independent of one another and of the DEK). Nonces
// stay random per seal, so sealing one record many times never repeats a
// (key, nonce) pair.
const recordKeyLabel = "lockbox seal v2\x00"

// recordKey derives the key of record ad under dek; the caller zeroes it.
func recordKey(dek *[KeySize]byte, ad []byte) *[KeySize]byte {
	m := hmac.New(sha256.New, dek[:])
	m.Write([]byte(recordKeyLabel))
	m.Write(ad)
	k := new([KeySize]byte)
	m.Sum(k[:0])
	return k
}

// SealRecord seals plaintext for the record ad names, under the current
// DEK with a fresh random nonce. It opens only with the same ad.
func (k *Keyring) SealRecord(plaintext, ad []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	dek := k.deks[k.current]
	if dek == nil {
		return nil, ErrLocked
	}
	out := make([]byte, sealHeader, sealHeader+len(plaintext)+secretbox.Overhead)
	out[0] = sealV2
	binary.BigEndian.PutUint32(out[1:5], k.current)
	var nonce [nonceSize]byte
	if _, err := io.ReadFull(rand.Reader, nonce[:]); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	copy(out[5:], nonce[:])
	rk := recordKey(dek, ad)
	defer clear(rk[:])
	return secretbox.Seal(out, plaintext, &nonce, rk), nil
}

// OpenRecord authenticates and opens sealed data of the record ad names.
// A v1 value (sealed before records were bound) opens whatever ad is.
func (k *Keyring) OpenRecord(sealed, ad []byte) ([]byte, error) {
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
	key := dek
	if sealed[0] == sealV2 {
		key = recordKey(dek, ad)
		defer clear(key[:])
	}
	out, ok := secretbox.Open(nil, sealed[sealHeader:], &nonce, key)
	if !ok {
		return nil, ErrCorrupt
	}
	return out, nil
}

// Seal is SealRecord for no record (empty ad): what manager/ca sealed its
// CA key and join tokens with before they were bound (it still opens such
// values once, and writes them back bound). Every value stored now is
// bound with SealRecord; Seal stays for tests that make such old values.
func (k *Keyring) Seal(plaintext []byte) ([]byte, error) { return k.SealRecord(plaintext, nil) }

// Open is OpenRecord for no record (empty ad); see Seal.
func (k *Keyring) Open(sealed []byte) ([]byte, error) { return k.OpenRecord(sealed, nil) }

// SealedKeyID returns the ID of the data key sealed was sealed under.
func SealedKeyID(sealed []byte) (uint32, error) {
	if len(sealed) < SealOverhead || (sealed[0] != sealV1 && sealed[0] != sealV2) {
		return 0, ErrCorrupt
	}
	return binary.BigEndian.Uint32(sealed[1:5]), nil
}

// NeedsReseal reports whether sealed is not under the current DEK, or
// not in the current (record-bound) format: a data-key rotation then
// rewrites it.
func (k *Keyring) NeedsReseal(sealed []byte) bool {
	id, err := SealedKeyID(sealed)
	k.mu.RLock()
	defer k.mu.RUnlock()
	return err == nil && (id != k.current || sealed[0] != sealV2)
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
