package keys

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// mappingFlags returns the VmFlags of the mapping holding addr.
func mappingFlags(t *testing.T, addr uintptr) string {
	t.Helper()
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	in := false
	for _, line := range strings.Split(string(smaps), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			lo, hi, _ := strings.Cut(f[0], "-")
			l, e1 := strconv.ParseUint(lo, 16, 64)
			h, e2 := strconv.ParseUint(hi, 16, 64)
			in = e1 == nil && e2 == nil && uint64(addr) >= l && uint64(addr) < h
			continue
		}
		if in && strings.HasPrefix(line, "VmFlags:") {
			return line
		}
	}
	t.Fatalf("no mapping holds %#x", addr)
	return ""
}

// The keyring's keys and the KEK live in locked (lo), non-dumpable (dd)
// memory, also after a clone or an unwrap, and freeing them zeroes it.
func TestKeysInLockedMemory(t *testing.T) {
	ring, err := NewKeyring()
	if err != nil {
		t.Fatal(err)
	}
	kek, err := NewKEK()
	if err != nil {
		t.Fatal(err)
	}
	w, err := Wrap(ring, kek)
	if err != nil {
		t.Fatal(err)
	}
	opened, err := Unwrap(w, kek)
	if err != nil {
		t.Fatal(err)
	}
	clone := cloneKEK(kek)
	keys := map[string]*[KeySize]byte{
		"DEK": ring.deks[1], "digest key": ring.macKey, "KEK": kek.k, "KEK copy": clone.k,
		"unwrapped DEK": opened.deks[1], "cloned ring's DEK": ring.clone().deks[1],
	}
	for what, k := range keys {
		flags := mappingFlags(t, uintptr(unsafe.Pointer(k)))
		for _, want := range []string{" lo", " dd"} {
			if !strings.Contains(flags, want) {
				t.Errorf("%s: mapping %q lacks%s", what, flags, want)
			}
		}
	}
	dek := ring.deks[1]
	ring.Close()
	if *dek != [KeySize]byte{} {
		t.Error("a closed ring's DEK memory was not zeroed")
	}
	k := kek.k
	kek.Zero()
	if *k != [KeySize]byte{} {
		t.Error("a zeroed KEK's memory still holds it")
	}
	opened.Close()
	clone.Zero()
}
