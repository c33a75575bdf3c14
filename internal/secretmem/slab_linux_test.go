package secretmem

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestSlabs(t *testing.T) {
	before := vmLckKiB(t)
	const n = 300 // more than one slab of every class
	type held struct {
		b       *Buffer
		pattern byte
		alias   []byte // the chunk's memory, to look at after Free
	}
	var hs []held
	for i := range n {
		size := []int{1, 40, 64, 65, 700, 1024, 2000, 2048}[i%8]
		data := bytes.Repeat([]byte{byte(i)}, size)
		b, err := Take(data)
		if err != nil {
			t.Fatal(err)
		}
		if !b.Locked() {
			t.Fatal("slab chunk not locked")
		}
		hs = append(hs, held{b: b, pattern: byte(i), alias: b.region})
	}
	// 300 secrets averaging under 1 KiB lock far less than a page each.
	if grown := vmLckKiB(t) - before; grown >= n*4 {
		t.Errorf("VmLck grew %d KiB for %d small secrets: no sharing", grown, n)
	}
	// No chunk overlaps another: every secret still reads its own pattern.
	for _, h := range hs {
		h.b.Use(func(d []byte) error {
			if !bytes.Equal(d, bytes.Repeat([]byte{h.pattern}, len(d))) {
				t.Fatalf("secret %d overwritten", h.pattern)
			}
			return nil
		})
	}
	rand.Shuffle(len(hs), func(i, j int) { hs[i], hs[j] = hs[j], hs[i] })
	for _, h := range hs {
		s := h.b.slab
		if s == nil {
			t.Fatalf("secret %d not in a slab", h.pattern)
		}
		if err := h.b.Free(); err != nil {
			t.Fatal(err)
		}
		// While its slab stays mapped, the freed chunk reads as zeros.
		if s.used > 0 && !bytes.Equal(h.alias, make([]byte, len(h.alias))) {
			t.Fatalf("freed chunk of secret %d not zeroed", h.pattern)
		}
	}
	if got := vmLckKiB(t); got != before {
		t.Errorf("VmLck %d KiB after freeing everything, want %d", got, before)
	}
}
