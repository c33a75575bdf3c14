package keys

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
)

func mustRing(t testing.TB) *Keyring {
	t.Helper()
	r, err := NewKeyring()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSealOpenRoundTrip(t *testing.T) {
	r := mustRing(t)
	for _, size := range []int{1, 15, 4096, 511999} {
		plain := bytes.Repeat([]byte("MARKER-"), size/7+1)[:size]
		sealed, err := r.Seal(plain)
		if err != nil {
			t.Fatal(err)
		}
		if len(sealed) != size+SealOverhead {
			t.Fatalf("size %d: sealed %d bytes, want %d", size, len(sealed), size+SealOverhead)
		}
		if size >= 7 && bytes.Contains(sealed, []byte("MARKER-")) {
			t.Fatalf("size %d: sealed bytes contain the plaintext", size)
		}
		got, err := r.Open(sealed)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("size %d: open: %v", size, err)
		}
	}
	// Fresh nonce per seal: equal plaintexts never seal equally.
	a, _ := r.Seal([]byte("same"))
	b, _ := r.Seal([]byte("same"))
	if bytes.Equal(a, b) {
		t.Fatal("two seals of one plaintext are equal")
	}
}

func TestOpenRejectsTampering(t *testing.T) {
	r := mustRing(t)
	sealed, err := r.Seal([]byte("attack at dawn"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range sealed {
		bad := bytes.Clone(sealed)
		bad[i] ^= 0x01
		if _, err := r.Open(bad); err == nil {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
	}
	for _, bad := range [][]byte{nil, {}, sealed[:SealOverhead-1], sealed[:len(sealed)-1]} {
		if _, err := r.Open(bad); err == nil {
			t.Fatalf("truncated %d bytes opened", len(bad))
		}
	}
}

func TestOpenWrongKey(t *testing.T) {
	a, b := mustRing(t), mustRing(t)
	sealed, _ := a.Seal([]byte("x"))
	if _, err := b.Open(sealed); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open under another ring: %v", err)
	}
	if a.Digest([]byte("x")) == b.Digest([]byte("x")) {
		t.Fatal("digests of two clusters agree: they are not keyed")
	}
	if d := a.Digest([]byte("x")); d != a.Digest([]byte("x")) || d == a.Digest([]byte("y")) {
		t.Fatal("digest is not a function of the data")
	}
}

func TestWrapUnwrap(t *testing.T) {
	r := mustRing(t)
	r.unlockKey = "LBXKEY-1-test"
	k1, _ := NewKEK()
	k2, _ := NewKEK()
	w, err := Wrap(r, k1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unwrap(w, k1)
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := r.Seal([]byte("secret"))
	if p, err := got.Open(sealed); err != nil || string(p) != "secret" || got.unlockKey != r.unlockKey {
		t.Fatalf("unwrapped ring differs: %v", err)
	}
	if _, err := Unwrap(w, k2); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("unwrap with another KEK: %v", err)
	}
	for i := 9; i < len(w); i++ {
		bad := bytes.Clone(w)
		bad[i] ^= 0x80
		if _, err := Unwrap(bad, k1); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("tampered byte %d: %v", i, err)
		}
	}
	r.Close()
	if _, err := r.Seal([]byte("x")); !errors.Is(err, ErrLocked) {
		t.Fatalf("seal after close: %v", err)
	}
}

func TestUnlockKey(t *testing.T) {
	key, err := NewUnlockKey()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(key, "LBXKEY-1-") || len(key) != len("LBXKEY-1-")+52 {
		t.Fatalf("unlock key %q", key)
	}
	a, err := KEKFromUnlockKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := KEKFromUnlockKey(strings.ToLower(key[:9]) + key[9:]); err == nil {
		t.Fatal("lower-case prefix accepted")
	}
	b, err := KEKFromUnlockKey(key + "\n")
	if err != nil || *a.k != *b.k {
		t.Fatalf("same key, different KEK: %v", err)
	}
	for _, bad := range []string{"", "SWMKEY-1-abc", "LBXKEY-1-", "LBXKEY-1-!!!", key[:len(key)-2]} {
		if _, err := KEKFromUnlockKey(bad); !errors.Is(err, ErrBadUnlockKey) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, KeyFileName)
	k, err := CreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", st.Mode(), err)
	}
	if _, err := CreateKeyFile(path); err == nil {
		t.Fatal("existing key file replaced")
	}
	got, err := LoadKeyFile(path)
	if err != nil || *got.k != *k.k {
		t.Fatalf("load: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(path); err == nil {
		t.Fatal("world-readable key file accepted")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temp files left behind: %v", entries)
	}
}

func FuzzUnwrap(f *testing.F) {
	kek, _ := KEKFromBytes(make([]byte, KeySize))
	r, _ := NewKeyring()
	w, _ := Wrap(r, kek)
	f.Add(w)
	f.Add(r.marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		// Neither may panic, whatever the bytes.
		if ring, err := Unwrap(b, kek); err == nil {
			ring.Close()
		}
		if ring, err := unmarshalRing(b); err == nil {
			if ring.deks[ring.current] == nil {
				t.Fatal("ring without its current key accepted")
			}
		}
	})
}

func FuzzOpen(f *testing.F) {
	r, _ := NewKeyring()
	s, _ := r.Seal([]byte("x"))
	f.Add(s)
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := r.Open(b); err == nil && !bytes.Equal(p, []byte("x")) {
			t.Fatalf("forged data opened: %q", p)
		}
	})
}

func TestSealRecordBindsAD(t *testing.T) {
	r := mustRing(t)
	sealed, err := r.SealRecord([]byte("data"), []byte("secretdata/a"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != 4+SealOverhead || sealed[0] != sealV2 {
		t.Fatalf("sealed %d bytes, format %#x", len(sealed), sealed[0])
	}
	for _, ad := range [][]byte{[]byte("secretdata/b"), []byte("secretdata/a\x00"), []byte("secretdata/"), nil} {
		if _, err := r.OpenRecord(sealed, ad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("opened with ad %q: %v", ad, err)
		}
	}
	if got, err := r.OpenRecord(sealed, []byte("secretdata/a")); err != nil || string(got) != "data" {
		t.Fatalf("open with its ad: %q %v", got, err)
	}
	// No ad is the empty ad (manager/ca's values).
	un, _ := r.Seal([]byte("x"))
	if got, err := r.OpenRecord(un, []byte{}); err != nil || string(got) != "x" {
		t.Fatalf("Seal opened with empty ad: %q %v", got, err)
	}
	// Old-format values open whatever the ad, and need a re-seal.
	v1 := r.sealV1ForTest([]byte("legacy"))
	for _, ad := range [][]byte{nil, []byte("secretdata/a")} {
		if got, err := r.OpenRecord(v1, ad); err != nil || string(got) != "legacy" {
			t.Fatalf("v1 with ad %q: %q %v", ad, got, err)
		}
	}
	if !r.NeedsReseal(v1) || r.NeedsReseal(sealed) {
		t.Fatalf("NeedsReseal: v1 %v, v2 %v", r.NeedsReseal(v1), r.NeedsReseal(sealed))
	}
	if _, err := SealedKeyID(append([]byte{0x03}, sealed[1:]...)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("unknown format: %v", err)
	}
}

// BenchmarkSealRecord measures what binding to a record costs: v1 seals
// under the DEK itself, v2 derives the record key first (one HMAC).
func BenchmarkSealRecord(b *testing.B) {
	r := mustRing(b)
	ad := []byte("secretdata/0123456789abcdefghijklmno")
	for _, size := range []int{64, 4096} {
		plain := bytes.Repeat([]byte{'x'}, size)
		b.Run(fmt.Sprintf("v1-%d", size), func(b *testing.B) {
			for b.Loop() {
				r.sealV1ForTest(plain)
			}
			benchinfo.Print(b)
		})
		b.Run(fmt.Sprintf("v2-%d", size), func(b *testing.B) {
			for b.Loop() {
				if _, err := r.SealRecord(plain, ad); err != nil {
					b.Fatal(err)
				}
			}
			benchinfo.Print(b)
		})
	}
}

func TestSealedFile(t *testing.T) {
	kek, _ := NewKEK()
	other, _ := NewKEK()
	plain := []byte("-----BEGIN EC PRIVATE KEY-----\nxyz\n-----END EC PRIVATE KEY-----\n")
	sealed, err := SealFile(kek, "node.key", plain)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("PRIVATE KEY")) || bytes.Contains(sealed, []byte("xyz")) {
		t.Fatal("sealed file shows its plaintext")
	}
	if got, err := OpenFile(kek, "node.key", sealed); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %q %v", got, err)
	}
	if _, err := OpenFile(other, "node.key", sealed); !errors.Is(err, ErrWrongKey) {
		t.Errorf("other KEK: %v", err)
	}
	if _, err := OpenFile(kek, "admin.key", sealed); !errors.Is(err, ErrCorrupt) {
		t.Errorf("other role: %v", err)
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	if _, err := OpenFile(kek, "node.key", tampered); !errors.Is(err, ErrCorrupt) {
		t.Errorf("tampered: %v", err)
	}
	if id, ok := SealedFileKEKID(sealed); !ok || id != kek.ID() {
		t.Error("KEK ID of the sealed file")
	}
}
