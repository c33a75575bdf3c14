//go:build integration && linux

package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/plugin/ocispec"
)

// crun behind lockbox-runtime (LOCKBOX_RUNC), through containerd 2.4.2
// and the Go client, in both attach modes. crun runs through
// harness.Crun, which hides this machine's hybrid cgroup layout from it,
// and the specs say ociVersion 1.1.0, the newest crun 1.8.1 takes (see
// docs/containerd.md, "crun").
func TestCrun(t *testing.T) {
	bin := harness.LockboxBin(t)
	runtimeBin := filepath.Join(bin, "lockbox-runtime")
	crun := harness.Crun(t)
	a := harness.StartTestAgent(t, testGrants, testSecrets)

	t.Run("plain", func(t *testing.T) {
		// crun alone, no Lockbox part: what the rest stands on.
		c := harness.StartContainerd(t, harness.Options{})
		c.Import("default", harness.ImageConfig{Name: busybox})
		cl, ctx := c.Client("default")
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		out, code, err := c.GoRun(ctx, cl, busybox, "crun-plain", crun,
			harness.WithCrunSpecVersion, oci.WithProcessArgs("sh", "-c", "echo hello from crun; cat /proc/1/cgroup"))
		if err != nil || code != 0 || !strings.Contains(out, "hello from crun") {
			t.Fatalf("exit %d, %v: %q", code, err, out)
		}
	})

	for _, mode := range []string{"attach", "hook"} {
		t.Run(mode, func(t *testing.T) {
			hookLog := filepath.Join(t.TempDir(), "hook.log")
			c := harness.StartContainerd(t, harness.Options{Env: []string{
				"LOCKBOX_AGENT_SOCKET=" + a.Socket,
				"LOCKBOX_RUNC=" + crun,
				"LOCKBOX_RUNTIME_MODE=" + mode,
				"LOCKBOX_HOOK_LOG=" + hookLog,
			}})
			c.Import("default", harness.ImageConfig{Name: busybox})
			cl, ctx := c.Client("default")
			ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()

			out, code, err := c.GoRun(ctx, cl, busybox, "crun-claim", runtimeBin,
				harness.WithCrunSpecVersion, oci.WithProcessArgs("sh", "-c", inspectScript), ocispec.WithService("web"))
			if err != nil || code != 0 {
				t.Fatalf("claiming: exit %d, %v: %q", code, err, out)
			}
			checkInspect(t, out)

			out, code, err = c.GoRun(ctx, cl, busybox, "crun-ro", runtimeBin,
				harness.WithCrunSpecVersion, oci.WithRootFSReadonly(),
				oci.WithProcessArgs("sh", "-c", "cat /run/secrets/db_pw; touch /x 2>&1; true"), ocispec.WithService("ro"))
			if err != nil || code != 0 || !strings.Contains(out, "hunter2-db") || !strings.Contains(out, "Read-only") {
				t.Errorf("read-only rootfs: exit %d, %v: %q", code, err, out)
			}

			out, code, err = c.GoRun(ctx, cl, busybox, "crun-denied", runtimeBin,
				harness.WithCrunSpecVersion, oci.WithProcessArgs("true"), ocispec.WithService("other"))
			if err == nil {
				t.Errorf("claiming an ungranted service: exit %d, %q: want a failed create", code, out)
			}
			// runc passes a failed hook's stderr into its error, crun only
			// the hook's exit status: there the hook's log names the service.
			why := ""
			if err != nil {
				why = err.Error()
			}
			if mode == "hook" {
				b, _ := os.ReadFile(hookLog)
				why = string(b)
			}
			if !strings.Contains(why, `service "other"`) || !strings.Contains(why, "NOT_GRANTED") {
				t.Errorf("claiming an ungranted service: the failure does not name the service: %q", why)
			}

			out, code, err = c.GoRun(ctx, cl, busybox, "crun-plain", runtimeBin,
				harness.WithCrunSpecVersion, oci.WithProcessArgs("sh", "-c", "echo plain; ls /run/secrets 2>&1; true"))
			if err != nil || code != 0 || !strings.Contains(out, "plain") || !strings.Contains(out, "No such file") {
				t.Errorf("non-claiming: exit %d, %v: %q", code, err, out)
			}

			if held := a.Held(); len(held) != 0 {
				t.Errorf("agent still holds mounts after the containers were removed: %v", held)
			}
		})
	}
}
