//go:build linux

package steptrace

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestMark(t *testing.T) {
	p := filepath.Join(t.TempDir(), "trace")
	tests := []struct {
		name  string
		env   string
		lines int
	}{
		{"unset: nil tracer, nothing written", "", 0},
		{"set: one line per mark", p, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := Open(func(k string) string {
				if k == Env {
					return tc.env
				}
				return ""
			})
			if (tr == nil) != (tc.env == "") {
				t.Fatalf("Open = %v with %s=%q", tr, Env, tc.env)
			}
			tr.Mark("ctr-1", "a")
			tr.Mark("ctr-1", "b")
			if tc.env == "" {
				return
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) != tc.lines {
				t.Fatalf("%d lines, want %d: %q", len(lines), tc.lines, b)
			}
			var prev int64
			for i, l := range lines {
				f := strings.Fields(l)
				if len(f) != 3 || f[0] != "ctr-1" || f[1] != []string{"a", "b"}[i] {
					t.Fatalf("line %q", l)
				}
				ns, err := strconv.ParseInt(f[2], 10, 64)
				if err != nil || ns < prev {
					t.Fatalf("line %q: time %d after %d, %v", l, ns, prev, err)
				}
				prev = ns
			}
		})
	}
}
