package claimrule

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestImportsOnlyTheStandardLibrary: the managers and the agent both link
// this package, and an adapter may; it must stay free of gRPC, protobuf
// and containerd.
func TestImportsOnlyTheStandardLibrary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := []string{"github.com/lockbox-project/lockbox/api/claimrule", "github.com/lockbox-project/lockbox/api/ruleexpr"}
	for _, pkg := range strings.Fields(string(out)) {
		if !slices.Contains(allowed, pkg) {
			t.Errorf("api/claimrule imports %s", pkg)
		}
	}
}
