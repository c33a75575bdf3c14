package main

import (
	"strings"
	"testing"
)

// Metrics are off unless asked for, on both daemons, and the flag tells
// where to bind them.
func TestMetricsAddrFlag(t *testing.T) {
	root := newRootCommand()
	for _, name := range []string{"manager", "agent"} {
		cmd, _, err := root.Find([]string{name})
		if err != nil || cmd.Name() != name {
			t.Fatalf("no %s command: %v", name, err)
		}
		f := cmd.Flags().Lookup("metrics-addr")
		if f == nil {
			t.Fatalf("lockbox %s has no --metrics-addr", name)
		}
		if f.DefValue != "" {
			t.Errorf("lockbox %s --metrics-addr defaults to %q: metrics must be off by default", name, f.DefValue)
		}
		if !strings.Contains(f.Usage, "loopback") {
			t.Errorf("lockbox %s --metrics-addr usage does not say where to bind: %q", name, f.Usage)
		}
	}
}
