package keys

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/nacl/secretbox"

	"github.com/lockbox-project/lockbox/internal/atomicfile"
)

// KEK is a key-encryption key: it wraps the keyring. Zero it when done.
type KEK struct{ k [KeySize]byte }

// NewKEK returns a random KEK (for the key file of a cluster without
// autolock).
func NewKEK() (*KEK, error) {
	k := &KEK{}
	if _, err := io.ReadFull(rand.Reader, k.k[:]); err != nil {
		return nil, fmt.Errorf("generate key-encryption key: %w", err)
	}
	return k, nil
}

// KEKFromBytes copies b (KeySize bytes, as from Bytes) into a KEK, for the
// join flow. The caller zeroes b.
func KEKFromBytes(b []byte) (*KEK, error) {
	if len(b) != KeySize {
		return nil, fmt.Errorf("key-encryption key: want %d bytes, got %d", KeySize, len(b))
	}
	k := &KEK{}
	copy(k.k[:], b)
	return k, nil
}

// Bytes returns a copy of the key, to hand to a joining manager over
// mutual TLS. The caller zeroes it.
func (k *KEK) Bytes() []byte { return append([]byte(nil), k.k[:]...) }

// Zero wipes the key.
func (k *KEK) Zero() { clear(k.k[:]) }

// id names the KEK without revealing it, so a wrong key is told apart
// from a corrupt keyring. Safe to store: the KEK is 256 random bits.
func (k *KEK) id() [8]byte {
	h := sha256.Sum256(append([]byte("lockbox kek id v1\x00"), k.k[:]...))
	var id [8]byte
	copy(id[:], h[:8])
	return id
}

// Unlock keys look like LBXKEY-1-<52 base32 characters>: 256 random bits.
const unlockKeyPrefix = "LBXKEY-1-"

var unlockEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewUnlockKey returns a fresh unlock key to print once to the operator.
func NewUnlockKey() (string, error) {
	var b [KeySize]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		return "", fmt.Errorf("generate unlock key: %w", err)
	}
	defer clear(b[:])
	return unlockKeyPrefix + unlockEncoding.EncodeToString(b[:]), nil
}

// ErrBadUnlockKey: the text is not an unlock key at all.
var ErrBadUnlockKey = errors.New("not a Lockbox unlock key (want LBXKEY-1-...)")

// KEKFromUnlockKey derives the KEK from an unlock key with HKDF-SHA256.
func KEKFromUnlockKey(unlockKey string) (*KEK, error) {
	s := strings.TrimSpace(unlockKey)
	if !strings.HasPrefix(s, unlockKeyPrefix) {
		return nil, ErrBadUnlockKey
	}
	raw, err := unlockEncoding.DecodeString(strings.ToUpper(s[len(unlockKeyPrefix):]))
	if err != nil || len(raw) != KeySize {
		clear(raw)
		return nil, ErrBadUnlockKey
	}
	defer clear(raw)
	derived, err := hkdf.Key(sha256.New, raw, nil, "lockbox autolock kek v1", KeySize)
	if err != nil {
		return nil, fmt.Errorf("derive key from unlock key: %w", err)
	}
	defer clear(derived)
	return KEKFromBytes(derived)
}

// KeyFileName is the name of the KEK file in a manager's data dir.
const KeyFileName = "kek.key"

// CreateKeyFile writes a new random KEK to path (mode 0600), failing if
// the file exists, and returns it.
func CreateKeyFile(path string) (*KEK, error) {
	k, err := NewKEK()
	if err != nil {
		return nil, err
	}
	if err := WriteKeyFile(path, k); err != nil {
		k.Zero()
		return nil, err
	}
	return k, nil
}

// WriteKeyFile writes k to path (mode 0600) atomically, so a crash
// leaves either no file or a whole one. It refuses to replace an existing
// file: a KEK overwritten is every secret lost.
func WriteKeyFile(path string, k *KEK) error {
	if err := atomicfile.CreateFile(path, k.k[:], 0o600); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	return nil
}

// LoadKeyFile reads the KEK at path. It refuses a file that group or
// others can read or that is not exactly one key.
func LoadKeyFile(path string) (*KEK, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("load key file %s: mode %#o lets others read it; chmod 600 it", path, st.Mode().Perm())
	}
	if st.Size() != KeySize {
		return nil, fmt.Errorf("load key file %s: want %d bytes, found %d", path, KeySize, st.Size())
	}
	k := &KEK{}
	if _, err := io.ReadFull(f, k.k[:]); err != nil {
		return nil, fmt.Errorf("load key file %s: %w", path, err)
	}
	return k, nil
}

// Keyring encoding (plaintext, only ever inside a wrap):
//
//	0x01 | current uint32 | mac key (32) | len uint16 | unlock key | n uint16 | n × (id uint32 | key (32))
const ringVersion = 0x01

func (k *Keyring) marshal() []byte {
	k.mu.RLock()
	defer k.mu.RUnlock()
	b := make([]byte, 0, 1+4+KeySize+2+len(k.unlockKey)+2+len(k.deks)*(4+KeySize))
	b = append(b, ringVersion)
	b = binary.BigEndian.AppendUint32(b, k.current)
	b = append(b, k.macKey[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(k.unlockKey)))
	b = append(b, k.unlockKey...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(k.deks)))
	for id, d := range k.deks {
		b = binary.BigEndian.AppendUint32(b, id)
		b = append(b, d[:]...)
	}
	return b
}

func unmarshalRing(b []byte) (*Keyring, error) {
	take := func(n int) ([]byte, bool) {
		if len(b) < n {
			return nil, false
		}
		v := b[:n]
		b = b[n:]
		return v, true
	}
	v, ok := take(1 + 4 + KeySize + 2)
	if !ok || v[0] != ringVersion {
		return nil, ErrCorrupt
	}
	k := &Keyring{current: binary.BigEndian.Uint32(v[1:5]), deks: map[uint32]*[KeySize]byte{}, macKey: new([KeySize]byte)}
	copy(k.macKey[:], v[5:5+KeySize])
	ul := int(binary.BigEndian.Uint16(v[5+KeySize:]))
	u, ok := take(ul)
	if !ok {
		k.Close()
		return nil, ErrCorrupt
	}
	k.unlockKey = string(u)
	nb, ok := take(2)
	if !ok {
		k.Close()
		return nil, ErrCorrupt
	}
	for range int(binary.BigEndian.Uint16(nb)) {
		e, ok := take(4 + KeySize)
		if !ok {
			k.Close()
			return nil, ErrCorrupt
		}
		d := new([KeySize]byte)
		copy(d[:], e[4:])
		k.deks[binary.BigEndian.Uint32(e[:4])] = d
	}
	if len(b) != 0 || k.deks[k.current] == nil {
		k.Close()
		return nil, ErrCorrupt
	}
	return k, nil
}

const wrapHeader = 1 + 8 + nonceSize

// Wrap seals the keyring under kek.
func Wrap(ring *Keyring, kek *KEK) ([]byte, error) {
	plain := ring.marshal()
	defer clear(plain)
	var nonce [nonceSize]byte
	if _, err := io.ReadFull(rand.Reader, nonce[:]); err != nil {
		return nil, fmt.Errorf("wrap keyring: nonce: %w", err)
	}
	id := kek.id()
	out := make([]byte, 0, wrapHeader+len(plain)+secretbox.Overhead)
	out = append(out, ringVersion)
	out = append(out, id[:]...)
	out = append(out, nonce[:]...)
	return secretbox.Seal(out, plain, &nonce, &kek.k), nil
}

// Unwrap opens a wrapped keyring with kek: ErrWrongKey when kek is not the
// one it was wrapped with, ErrCorrupt when it was tampered with.
func Unwrap(wrapped []byte, kek *KEK) (*Keyring, error) {
	if len(wrapped) < wrapHeader+secretbox.Overhead || wrapped[0] != ringVersion {
		return nil, ErrCorrupt
	}
	if id := kek.id(); string(wrapped[1:9]) != string(id[:]) {
		return nil, ErrWrongKey
	}
	var nonce [nonceSize]byte
	copy(nonce[:], wrapped[9:wrapHeader])
	plain, ok := secretbox.Open(nil, wrapped[wrapHeader:], &nonce, &kek.k)
	if !ok {
		return nil, ErrCorrupt
	}
	defer clear(plain)
	return unmarshalRing(plain)
}
