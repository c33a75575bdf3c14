//go:build integration && linux

package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/integration/harness"
)

const busybox = "docker.io/library/busybox:lockbox"

// A container that claims no service runs through lockbox-runtime exactly
// as through runc, on both containerd versions.
func TestPassthroughNonClaiming(t *testing.T) {
	bin := harness.LockboxBin(t)
	for _, flavor := range []harness.Flavor{harness.V2, harness.V16} {
		t.Run(string(flavor), func(t *testing.T) {
			c := harness.StartContainerd(t, harness.Options{Flavor: flavor})
			c.Import("default", harness.ImageConfig{Name: busybox})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			args := append(c.RunArgs(filepath.Join(bin, "lockbox-runtime")), busybox, "plain", "sh", "-c", "echo hello; ls /run/secrets 2>&1; true")
			out, err := c.Ctr(ctx, "default", args...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "hello") || !strings.Contains(out, "No such file") {
				t.Fatalf("output %q: want hello and no /run/secrets", out)
			}
		})
	}
}
