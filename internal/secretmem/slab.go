package secretmem

import (
	"sync"
)

// Small secrets share locked slabs: a mapping of its own would lock a
// whole page (4 KiB) for a 20-byte password, and a node holds thousands of
// grants. A slab is one mapping (locked, not dumpable, like any Buffer's)
// cut into chunks of one size class. A freed chunk is zeroed before it is
// handed out again, and a slab with no chunk in use is unmapped.

const slabSize = 64 << 10

// classes are the chunk sizes; larger secrets get their own mapping.
var classes = [...]int{64, 256, 1024, 2048}

type slab struct {
	class  int
	mem    []byte
	locked bool
	free   []int // chunk indexes
	used   int
}

type arena struct {
	mu    sync.Mutex
	slabs [len(classes)][]*slab
}

var small arena

// classFor returns the class index for n bytes, or -1.
func classFor(n int) int {
	for i, c := range classes {
		if n <= c {
			return i
		}
	}
	return -1
}

// get returns a zeroed chunk of class ci and its index in the slab.
func (a *arena) get(ci int) ([]byte, *slab, int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var s *slab
	for _, cand := range a.slabs[ci] {
		if len(cand.free) > 0 {
			s = cand
			break
		}
	}
	if s == nil {
		mem, locked, err := alloc(slabSize)
		if err != nil {
			return nil, nil, 0, err
		}
		size := classes[ci]
		s = &slab{class: ci, mem: mem, locked: locked}
		for i := len(mem)/size - 1; i >= 0; i-- {
			s.free = append(s.free, i)
		}
		a.slabs[ci] = append(a.slabs[ci], s)
	}
	i := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	s.used++
	size := classes[ci]
	return s.mem[i*size : (i+1)*size : (i+1)*size], s, i, nil
}

// put zeroes chunk i and returns it to s; an idle slab is unmapped.
func (a *arena) put(s *slab, i int, chunk []byte) error {
	Zero(chunk)
	a.mu.Lock()
	defer a.mu.Unlock()
	s.free = append(s.free, i)
	s.used--
	if s.used > 0 {
		return nil
	}
	list := a.slabs[s.class]
	for i, cand := range list {
		if cand == s {
			a.slabs[s.class] = append(list[:i], list[i+1:]...)
			break
		}
	}
	return releaseFn(s.mem)
}
