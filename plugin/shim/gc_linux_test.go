//go:build linux

package shim

import (
	"runtime/debug"
	"testing"
)

// TestCollectAtGoDefault: the shim undoes pkg/shim's GC percentage of 40,
// to Go's default or to what GOGC says, read as the Go runtime reads it.
func TestCollectAtGoDefault(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, c := range []struct {
		gogc string
		want int
	}{
		{"", 100},
		{"off", -1},
		{"200", 200},
		{"25", 25},
		{"lots", 100},
	} {
		// What pkg/shim's setRuntime leaves.
		debug.SetGCPercent(40)
		collectAtGoDefault(func(k string) string {
			if k == "GOGC" {
				return c.gogc
			}
			return ""
		})
		if got := debug.SetGCPercent(40); got != c.want {
			t.Errorf("GOGC=%q: GC percent %d, want %d", c.gogc, got, c.want)
		}
	}
}
