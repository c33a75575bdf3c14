//go:build integration && linux

package integration

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/integration/harness"
)

// TestDemo runs `make demo`'s script, the README's first command, so that
// it cannot drift from the code: it failed once on a layout change that no
// other test saw (it looked for a mount at /run/secrets).
func TestDemo(t *testing.T) {
	harness.LockboxBin(t) // the script runs bin/ of this checkout: make build
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", "../hack/demo.sh").CombinedOutput()
	if err != nil {
		t.Fatalf("hack/demo.sh: %v\n%s", err, out)
	}
	for _, want := range []string{
		"correct horse battery staple",        // the container read its secret
		"/run/secrets/db_password tmpfs  ro,", // a read-only single-file mount
		"(no secrets mount on the host)",      // the host never sees it
		`claims service "payments"`,           // a claim without a grant is refused by name
		"(no secret bytes in any daemon log)", // nothing leaked into logs
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}
