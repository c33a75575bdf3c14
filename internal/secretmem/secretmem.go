package secretmem

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
)

// ErrFreed is returned for a Buffer used after Free.
var ErrFreed = errors.New("secretmem: buffer already freed")

// Buffer is secret bytes in locked, non-dumpable memory. A Buffer must be
// freed with Free; its bytes are valid only until then. It is safe for
// concurrent use: Free waits for readers in Use.
type Buffer struct {
	mu     sync.RWMutex
	region []byte // the whole mapping (page-rounded), or a slab chunk
	slab   *slab  // the slab region belongs to, if any
	chunk  int    // region's chunk index in slab
	n      int    // length of the secret within region
	locked bool   // whether the region could be locked into RAM
}

// New allocates a zeroed Buffer of n bytes (n may be zero).
func New(n int) (*Buffer, error) {
	if n < 0 {
		return nil, errors.New("secretmem: negative size")
	}
	if ci := classFor(n); ci >= 0 {
		chunk, s, i, err := small.get(ci)
		if err != nil {
			return nil, err
		}
		return &Buffer{region: chunk, slab: s, chunk: i, n: n, locked: s.locked}, nil
	}
	region, locked, err := alloc(n)
	if err != nil {
		return nil, err
	}
	return &Buffer{region: region, n: n, locked: locked}, nil
}

// Take copies src into a new Buffer and zeroes src, so that the caller's
// heap copy does not outlive the call.
func Take(src []byte) (*Buffer, error) {
	b, err := New(len(src))
	if err != nil {
		Zero(src)
		return nil, err
	}
	copy(b.region, src)
	Zero(src)
	return b, nil
}

// Format prints a Buffer as its length, whatever the verb: a Buffer that
// reaches a log line, an error or a panic by mistake must not show its
// bytes, which fmt would print for a pointer to a struct.
func (b *Buffer) Format(f fmt.State, verb rune) { io.WriteString(f, b.String()) }

// String is Format's text, for printers that look for a Stringer.
func (b *Buffer) String() string {
	if b == nil {
		return "secretmem.Buffer(nil)"
	}
	return fmt.Sprintf("secretmem.Buffer(%d bytes)", b.n)
}

// Len is the length of the secret.
func (b *Buffer) Len() int { return b.n }

// Locked reports whether the memory is locked into RAM. It is false only
// where the platform refused to lock (Windows working-set limits).
func (b *Buffer) Locked() bool { return b.locked }

// Use calls fn with the secret's bytes. fn must not retain the slice or
// copy it anywhere but into its destination (a tmpfs file).
func (b *Buffer) Use(fn func(data []byte) error) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.region == nil {
		return ErrFreed
	}
	return fn(b.region[:b.n:b.n])
}

// Bytes returns the secret's bytes to be used in place, for keys used on
// every call (a cipher takes the key, not a callback). The slice is valid
// until Free, which zeroes it: the owner must not use it afterwards, nor
// copy it anywhere but into other locked memory.
func (b *Buffer) Bytes() []byte {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.region == nil {
		return nil
	}
	return b.region[:b.n:b.n]
}

// Free zeroes the memory and returns it to the system. It is safe to call
// more than once.
func (b *Buffer) Free() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.region == nil {
		return nil
	}
	var err error
	if b.slab != nil {
		err = small.put(b.slab, b.chunk, b.region)
	} else {
		Zero(b.region)
		err = releaseFn(b.region)
	}
	b.region, b.slab = nil, nil
	return err
}

// releaseFn is release, replaced in tests to look at the memory before it
// goes back to the system.
var releaseFn = release

// Zero overwrites b with zeros. Use it on heap slices that held secret
// bytes (a decoded message's field) once they are copied into a Buffer.
func Zero(b []byte) {
	clear(b)
	// Keep the stores: b may be dead right after this call.
	runtime.KeepAlive(b)
}
