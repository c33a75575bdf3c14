package keys

import (
	"fmt"
	"sync"

	"github.com/lockbox-project/lockbox/internal/secretmem"
)

// Every key this package holds (DEKs, the digest key, KEKs) lives in
// locked, non-dumpable memory (secretmem): never swapped, never in a core
// file, zeroed when dropped. newLockedKey hands out such a key as the
// *[KeySize]byte that secretbox and HMAC take.

// lockedKeys maps each key handed out to its buffer, so that freeing the
// key (by its pointer, as the ring and the KEK hold it) frees the buffer.
var (
	lockedMu   sync.Mutex
	lockedKeys = map[*[KeySize]byte]*secretmem.Buffer{}
)

func newLockedKey() (*[KeySize]byte, error) {
	b, err := secretmem.New(KeySize)
	if err != nil {
		return nil, fmt.Errorf("key memory: %w", err)
	}
	k := (*[KeySize]byte)(b.Bytes())
	lockedMu.Lock()
	lockedKeys[k] = b
	lockedMu.Unlock()
	return k, nil
}

// freeLockedKey zeroes k and returns its memory; k must not be used after.
// A key that newLockedKey did not make is only zeroed.
func freeLockedKey(k *[KeySize]byte) {
	if k == nil {
		return
	}
	lockedMu.Lock()
	b := lockedKeys[k]
	delete(lockedKeys, k)
	lockedMu.Unlock()
	if b == nil {
		clear(k[:])
		return
	}
	b.Free()
}

// copyLockedKey returns a new locked key holding k's bytes.
func copyLockedKey(k *[KeySize]byte) (*[KeySize]byte, error) {
	c, err := newLockedKey()
	if err != nil {
		return nil, err
	}
	*c = *k
	return c, nil
}

// lockedCopy is copyLockedKey for callers with no error to return: should
// no locked memory be left, the copy is on the heap (still zeroed when
// freed).
func lockedCopy(k *[KeySize]byte) *[KeySize]byte {
	c, err := copyLockedKey(k)
	if err != nil {
		c = new([KeySize]byte)
		*c = *k
	}
	return c
}
