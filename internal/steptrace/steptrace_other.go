//go:build !linux

package steptrace

// Tracer is a no-op off Linux: the phase benchmark runs on Linux only.
type Tracer struct{}

// Open returns nil: nothing is traced off Linux.
func Open(func(string) string) *Tracer { return nil }

// Mark does nothing.
func (t *Tracer) Mark(id, step string) {}
