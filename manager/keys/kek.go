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
	"path/filepath"
	"strings"

	"golang.org/x/crypto/nacl/secretbox"

	"github.com/lockbox-project/lockbox/internal/atomicfile"
)

// KEK is a key-encryption key: it wraps the keyring. It lives in locked
// memory (lockedkey.go). Zero it when done.
type KEK struct{ k *[KeySize]byte }

func newEmptyKEK() (*KEK, error) {
	k, err := newLockedKey()
	if err != nil {
		return nil, err
	}
	return &KEK{k: k}, nil
}

// cloneKEK copies k into new locked memory. Should no locked memory be
// left, the copy is on the heap (still zeroed by Zero) rather than failing
// the callers, which have no error to return.
func cloneKEK(k *KEK) *KEK { return &KEK{k: lockedCopy(k.k)} }

// NewKEK returns a random KEK (for the key file of a cluster without
// autolock).
func NewKEK() (*KEK, error) {
	k, err := newEmptyKEK()
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(rand.Reader, k.k[:]); err != nil {
		k.Zero()
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
	k, err := newEmptyKEK()
	if err != nil {
		return nil, err
	}
	copy(k.k[:], b)
	return k, nil
}

// Bytes returns a copy of the key, to hand to a joining manager over
// mutual TLS. The caller zeroes it.
func (k *KEK) Bytes() []byte { return append([]byte(nil), k.k[:]...) }

// Zero wipes the key.
func (k *KEK) Zero() {
	freeLockedKey(k.k)
	// A use after Zero sees a zero key, as it did when Zero only cleared.
	k.k = new([KeySize]byte)
}

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

// ReplaceKeyFile writes k to path (mode 0600) through a temp file and a
// rename, replacing the KEK file after a rotation: a crash leaves the old
// file or the new one.
func ReplaceKeyFile(path string, k *KEK) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".kek-*")
	if err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(k.k[:])
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
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
	k, err := newEmptyKEK()
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(f, k.k[:]); err != nil {
		k.Zero()
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
	mac, err := newLockedKey()
	if err != nil {
		return nil, err
	}
	k := &Keyring{current: binary.BigEndian.Uint32(v[1:5]), deks: map[uint32]*[KeySize]byte{}, macKey: mac}
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
		d, err := newLockedKey()
		if err != nil {
			k.Close()
			return nil, err
		}
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

// A keyring re-wrapped by an unlock-key rotation carries a forward: the new
// unlock key sealed under the previous KEK, so that every other manager,
// which holds only the previous KEK, follows the rotation (and re-seals its
// key files) without an operator. The forward lasts until the next write
// of the keyring or DropForward; while it lasts, the old unlock key with a
// copy of etcd's data gives the new one.
//
//	0x01 | KEK ID (8) | nonce (24) | secretbox(keyring)
//	0x02 | KEK ID (8) | nonce (24) | box length uint32 | secretbox(keyring)
//	     | previous KEK ID (8) | nonce (24) | secretbox(new unlock key, previous KEK)
const wrapForwardVersion = 0x02

// Wrap seals the keyring under kek.
func Wrap(ring *Keyring, kek *KEK) ([]byte, error) { return wrap(ring, kek, nil) }

// wrap seals the keyring under kek and, when prev is set, adds a forward
// from prev to the ring's unlock key.
func wrap(ring *Keyring, kek, prev *KEK) ([]byte, error) {
	plain := ring.marshal()
	defer clear(plain)
	var nonce [nonceSize]byte
	if _, err := io.ReadFull(rand.Reader, nonce[:]); err != nil {
		return nil, fmt.Errorf("wrap keyring: nonce: %w", err)
	}
	id := kek.id()
	version := byte(ringVersion)
	if prev != nil {
		version = wrapForwardVersion
	}
	out := make([]byte, 0, wrapHeader+4+len(plain)+secretbox.Overhead+wrapHeader+64)
	out = append(out, version)
	out = append(out, id[:]...)
	out = append(out, nonce[:]...)
	if prev == nil {
		return secretbox.Seal(out, plain, &nonce, kek.k), nil
	}
	out = binary.BigEndian.AppendUint32(out, uint32(len(plain)+secretbox.Overhead))
	out = secretbox.Seal(out, plain, &nonce, kek.k)
	// The forward carries the unlock key under autolock, else the new
	// KEK itself (key files: every manager rewrites its own).
	payload := []byte(nil)
	if unlockKey, ok := ring.unlockKeyOf(); ok {
		payload = []byte(unlockKey)
	} else {
		payload = append(payload, kek.k[:]...)
	}
	defer clear(payload)
	var fnonce [nonceSize]byte
	if _, err := io.ReadFull(rand.Reader, fnonce[:]); err != nil {
		return nil, fmt.Errorf("wrap keyring: nonce: %w", err)
	}
	pid := prev.id()
	out = append(out, pid[:]...)
	out = append(out, fnonce[:]...)
	return secretbox.Seal(out, payload, &fnonce, prev.k), nil
}

// Unwrap opens a wrapped keyring with kek: ErrWrongKey when kek is not the
// one it was wrapped with, ErrCorrupt when it was tampered with.
func Unwrap(wrapped []byte, kek *KEK) (*Keyring, error) {
	box, _, err := splitWrapped(wrapped)
	if err != nil {
		return nil, err
	}
	if id := kek.id(); string(wrapped[1:9]) != string(id[:]) {
		return nil, ErrWrongKey
	}
	var nonce [nonceSize]byte
	copy(nonce[:], wrapped[9:wrapHeader])
	plain, ok := secretbox.Open(nil, box, &nonce, kek.k)
	if !ok {
		return nil, ErrCorrupt
	}
	defer clear(plain)
	return unmarshalRing(plain)
}

// splitWrapped returns the keyring's box and the forward (nil if none).
func splitWrapped(w []byte) (box, forward []byte, err error) {
	if len(w) < wrapHeader+secretbox.Overhead {
		return nil, nil, ErrCorrupt
	}
	switch w[0] {
	case ringVersion:
		return w[wrapHeader:], nil, nil
	case wrapForwardVersion:
		if len(w) < wrapHeader+4 {
			return nil, nil, ErrCorrupt
		}
		n := int(binary.BigEndian.Uint32(w[wrapHeader:]))
		rest := w[wrapHeader+4:]
		if n < secretbox.Overhead || n > len(rest) || len(rest)-n < wrapHeader-1+secretbox.Overhead {
			return nil, nil, ErrCorrupt
		}
		return rest[:n], rest[n:], nil
	}
	return nil, nil, ErrCorrupt
}

// unwrapFollow opens a wrapped keyring with kek or, when kek is the KEK an
// unlock-key rotation replaced, through the ring's forward. It returns the
// ring and the KEK that opened it (a new KEK the caller owns).
func unwrapFollow(wrapped []byte, kek *KEK) (*Keyring, *KEK, error) {
	ring, err := Unwrap(wrapped, kek)
	if err == nil {
		return ring, cloneKEK(kek), nil
	}
	if !errors.Is(err, ErrWrongKey) {
		return nil, nil, err
	}
	_, fwd, ferr := splitWrapped(wrapped)
	if ferr != nil || fwd == nil {
		return nil, nil, err
	}
	if id := kek.id(); string(fwd[:8]) != string(id[:]) {
		return nil, nil, ErrWrongKey
	}
	var nonce [nonceSize]byte
	copy(nonce[:], fwd[8:8+nonceSize])
	payload, ok := secretbox.Open(nil, fwd[8+nonceSize:], &nonce, kek.k)
	if !ok {
		return nil, nil, ErrCorrupt
	}
	var next *KEK
	if len(payload) == KeySize {
		next, err = KEKFromBytes(payload)
	} else {
		next, err = KEKFromUnlockKey(string(payload))
	}
	clear(payload)
	if err != nil {
		return nil, nil, ErrCorrupt
	}
	ring, err = Unwrap(wrapped, next)
	if err != nil {
		next.Zero()
		return nil, nil, err
	}
	return ring, next, nil
}

// ID names the KEK without revealing it (see id), so a holder can tell
// whether something was sealed under this KEK or another.
func (k *KEK) ID() [8]byte { return k.id() }

// Sealed key files (the manager's own private keys under autolock):
//
//	0x01 | KEK ID (8) | nonce (24) | secretbox(file, HKDF(KEK, role))
//
// The role ("node.key", ...) is bound in by deriving the box key from it,
// secretbox having no associated data: a file sealed for one role does not
// open as another.
const fileVersion = 0x01

const fileHeader = 1 + 8 + nonceSize

func (k *KEK) fileKey(role string) (*[KeySize]byte, error) {
	b, err := hkdf.Key(sha256.New, k.k[:], nil, "lockbox sealed key file v1\x00"+role, KeySize)
	if err != nil {
		return nil, fmt.Errorf("derive file key: %w", err)
	}
	var fk [KeySize]byte
	copy(fk[:], b)
	clear(b)
	return &fk, nil
}

// SealFile seals plain, a private key file's content, under kek for role.
func SealFile(kek *KEK, role string, plain []byte) ([]byte, error) {
	fk, err := kek.fileKey(role)
	if err != nil {
		return nil, err
	}
	defer clear(fk[:])
	var nonce [nonceSize]byte
	if _, err := io.ReadFull(rand.Reader, nonce[:]); err != nil {
		return nil, fmt.Errorf("seal key file: nonce: %w", err)
	}
	id := kek.id()
	out := make([]byte, 0, fileHeader+len(plain)+secretbox.Overhead)
	out = append(out, fileVersion)
	out = append(out, id[:]...)
	out = append(out, nonce[:]...)
	return secretbox.Seal(out, plain, &nonce, fk), nil
}

// OpenFile opens what SealFile sealed: ErrWrongKey when kek is not the KEK
// it was sealed under, ErrCorrupt when it was tampered with or sealed for
// another role.
func OpenFile(kek *KEK, role string, sealed []byte) ([]byte, error) {
	if len(sealed) < fileHeader+secretbox.Overhead || sealed[0] != fileVersion {
		return nil, ErrCorrupt
	}
	if id := kek.id(); string(sealed[1:9]) != string(id[:]) {
		return nil, ErrWrongKey
	}
	fk, err := kek.fileKey(role)
	if err != nil {
		return nil, err
	}
	defer clear(fk[:])
	var nonce [nonceSize]byte
	copy(nonce[:], sealed[9:fileHeader])
	plain, ok := secretbox.Open(nil, sealed[fileHeader:], &nonce, fk)
	if !ok {
		return nil, ErrCorrupt
	}
	return plain, nil
}

// SealedFileKEKID is the ID of the KEK a sealed file is under.
func SealedFileKEKID(sealed []byte) ([8]byte, bool) {
	var id [8]byte
	if len(sealed) < fileHeader || sealed[0] != fileVersion {
		return id, false
	}
	copy(id[:], sealed[1:9])
	return id, true
}
