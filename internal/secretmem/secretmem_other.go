//go:build !linux && !windows

package secretmem

// Elsewhere the bytes live on the heap but are still zeroed on Free.
func alloc(n int) ([]byte, bool, error) {
	if n == 0 {
		n = 1
	}
	return make([]byte, n), false, nil
}

func release(region []byte) error { return nil }

// Harden does nothing on this platform.
func Harden() error { return nil }
