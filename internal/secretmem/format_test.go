package secretmem

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestBufferNeverPrintsItsBytes: a Buffer that reaches a log line, an
// error or a panic by mistake shows its length, never its bytes.
func TestBufferNeverPrintsItsBytes(t *testing.T) {
	const marker = "S3CRET-MARKER"
	for _, size := range []int{len(marker), 3000, 8192} {
		data := []byte(strings.Repeat(marker, size/len(marker)))
		b, err := Take(bytes.Clone(data))
		if err != nil {
			t.Fatal(err)
		}
		var logged bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logged, nil))
		log.Info("buffer", "b", b)
		slog.New(slog.NewJSONHandler(&logged, nil)).Info("buffer", "b", b)
		// Through any: the printf check would refuse verbs that only the
		// fix makes right.
		var v any = b
		out := fmt.Sprintf("%v %+v %#v %s %q %x %X %d", v, v, v, v, v, v, v, v) + fmt.Sprint(b) +
			fmt.Sprintf("%v", struct{ B *Buffer }{b}) + logged.String()
		for _, leak := range []string{marker, fmt.Sprintf("%x", marker[:8]), fmt.Sprintf("%X", marker[:8]), fmt.Sprint([]byte(marker[:4]))[1:10]} {
			if strings.Contains(out, leak) {
				t.Errorf("size %d: %q found in the printed forms:\n%s", size, leak, out)
				break
			}
		}
		if !strings.Contains(fmt.Sprint(b), fmt.Sprint(len(data))) {
			t.Errorf("size %d: printed as %q, want its length", size, fmt.Sprint(b))
		}
		b.Free()
	}
	var nilBuf *Buffer
	if got := fmt.Sprint(nilBuf); got != "secretmem.Buffer(nil)" {
		t.Errorf("nil buffer printed as %q", got)
	}
}

// Bytes gives the secret in place until Free, and nothing after.
func TestBytesInPlace(t *testing.T) {
	b, err := Take([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	p := b.Bytes()
	if string(p) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("Bytes: %q", p)
	}
	p[0] = 'X'
	b.Use(func(d []byte) error {
		if d[0] != 'X' {
			t.Error("Bytes is not the buffer's memory")
		}
		return nil
	})
	if err := b.Free(); err != nil {
		t.Fatal(err)
	}
	if b.Bytes() != nil {
		t.Error("Bytes after Free")
	}
}
