//go:build integration && linux

package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/mounter"
)

// The mount layout of issue 12, through lockbox-runtime (both ways it
// attaches) and containerd-shim-lockbox-v2 on containerd 2.4.2: every
// secret is a single-file mount, so
//   - a read-only rootfs takes an absolute target whose directory the
//     image lacks (/etc/app/cert.pem): the runtime makes the mountpoint
//     before the root turns read-only, as under Docker;
//   - a container with a volume at /run/secrets/kubernetes.io/serviceaccount
//     (where Kubernetes puts the service-account token) keeps it, and gets
//     its secrets beside it.

var layoutGrants = map[string][]mounter.Grant{
	"layout": {
		{SecretID: "l1", SecretName: "db_pw", Size: int64(len("hunter2-db"))},
		{SecretID: "l2", SecretName: "cert", Target: "/etc/app/cert.pem", UID: "1000", GID: "2000", Mode: 0o440, Size: int64(len("CERT-BYTES"))},
	},
	// A target in the service-account volume: a collision.
	"satoken": {{SecretID: "l1", SecretName: "db_pw", Target: "kubernetes.io/serviceaccount/token", Size: int64(len("hunter2-db"))}},
}

var layoutSecrets = map[string][]byte{"l1": []byte("hunter2-db"), "l2": []byte("CERT-BYTES")}

const layoutScript = `cat /run/secrets/db_pw; echo; cat /etc/app/cert.pem; echo; stat -c '%n %u %g %a' /etc/app/cert.pem;
cat /run/secrets/kubernetes.io/serviceaccount/token 2>&1; echo; ls /run/secrets | tr '\n' ' '; echo`

// layoutCases runs the layout checks with run, which starts a container
// with ctr's extra flags and returns its output.
func layoutCases(t *testing.T, run func(id string, extra ...string) (string, error)) {
	tokenDir := t.TempDir()
	if err := os.Chmod(tokenDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tokenDir, "token"), []byte("sa-token"), 0o644); err != nil {
		t.Fatal(err)
	}
	saMount := "type=bind,src=" + tokenDir + ",dst=/run/secrets/kubernetes.io/serviceaccount,options=rbind:ro"
	for _, tc := range []struct {
		name  string
		extra []string
		sa    bool
	}{
		{"read-only rootfs, target whose directory the image lacks", []string{"--read-only"}, false},
		{"service-account volume under /run/secrets", []string{"--mount", saMount}, true},
		{"read-only rootfs and service-account volume", []string{"--read-only", "--mount", saMount}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "layout-" + strings.NewReplacer(" ", "-", ",", "").Replace(tc.name)[:20]
			out, err := run(id, append(tc.extra, "--annotation", "lockbox.service=layout")...)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"hunter2-db\n", "CERT-BYTES\n", "/etc/app/cert.pem 1000 2000 440"} {
				if !strings.Contains(out, want) {
					t.Errorf("container output lacks %q:\n%s", want, out)
				}
			}
			if tc.sa {
				if !strings.Contains(out, "sa-token") || !strings.Contains(out, "kubernetes.io") {
					t.Errorf("the service-account token is hidden:\n%s", out)
				}
			}
		})
	}
	// A target in the volume is refused by name: at the attach for a
	// writable root, before the create for a read-only one.
	for _, ro := range []bool{false, true} {
		extra := []string{"--mount", saMount, "--annotation", "lockbox.service=satoken"}
		if ro {
			extra = append(extra, "--read-only")
		}
		_, err := run(fmt.Sprintf("layout-collide-%v", ro), extra...)
		var ce *harness.CtrError
		if !errors.As(err, &ce) || !strings.Contains(ce.Stderr, "kubernetes.io/serviceaccount/token") || !strings.Contains(ce.Stderr, "collides with") {
			t.Errorf("read-only %v: a target in the service-account volume: %v, want the collision named", ro, err)
		} else {
			t.Logf("read-only %v: refused: %s", ro, strings.TrimSpace(ce.Stderr))
		}
	}
}

func TestLayoutWrapper(t *testing.T) {
	bin := harness.LockboxBin(t)
	runtimeBin := filepath.Join(bin, "lockbox-runtime")
	a := harness.StartTestAgent(t, layoutGrants, layoutSecrets)
	for _, mode := range []string{"attach", "hook"} {
		t.Run(mode, func(t *testing.T) {
			c := harness.StartContainerd(t, harness.Options{Env: []string{
				"LOCKBOX_AGENT_SOCKET=" + a.Socket,
				"LOCKBOX_RUNTIME_MODE=" + mode,
				"LOCKBOX_HOOK_LOG=" + filepath.Join(t.TempDir(), "hook.log"),
			}})
			c.Import("default", harness.ImageConfig{Name: busybox})
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			layoutCases(t, func(id string, extra ...string) (string, error) {
				args := append(append(c.RunArgs(runtimeBin), extra...), busybox, id, "sh", "-c", layoutScript)
				return c.Ctr(ctx, "default", args...)
			})
			if mode == "attach" {
				// The hook of a user-namespaced container runs as its
				// mapped root, which cannot reach the root-only agent
				// socket: that mode never served one (before this
				// layout as after).
				checkUserns(t, func() (string, error) {
					return c.Ctr(ctx, "default", append(c.RunArgs(runtimeBin), usernsArgs...)...)
				})
			}
			if held := a.Held(); len(held) != 0 {
				t.Errorf("agent still holds mounts after the containers were removed: %v", held)
			}
		})
	}
}

func TestLayoutShim(t *testing.T) {
	bin := harness.LockboxBin(t)
	if _, err := os.Stat(filepath.Join(bin, "containerd-shim-lockbox-v2")); err != nil {
		t.Fatalf("%v (make build)", err)
	}
	a := harness.StartTestAgent(t, layoutGrants, layoutSecrets)
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	layoutCases(t, func(id string, extra ...string) (string, error) {
		args := append(append(c.ShimRunArgs(shimRuntime), extra...), busybox, id, "sh", "-c", layoutScript)
		return c.Ctr(ctx, "default", args...)
	})
	checkUserns(t, func() (string, error) {
		return c.Ctr(ctx, "default", append(c.ShimRunArgs(shimRuntime), usernsArgs...)...)
	})
	if held := a.HeldReleased(); len(held) != 0 {
		t.Errorf("agent still holds mounts after the containers were removed: %v", held)
	}
}

// usernsArgs run a user-namespaced claiming container (after ctr's run
// flags): it gets its mountpoints from runc as well.
var usernsArgs = []string{"--uidmap", "0:100000:65536", "--gidmap", "0:200000:65536",
	"--annotation", "lockbox.service=layout", busybox, "layout-userns", "sh", "-c", layoutScript + "; cat /proc/self/uid_map"}

func checkUserns(t *testing.T, run func() (string, error)) {
	t.Helper()
	out, err := run()
	if err != nil {
		t.Fatalf("user-namespaced container: %v", err)
	}
	for _, want := range []string{"100000", "hunter2-db\n", "CERT-BYTES\n", "/etc/app/cert.pem 1000 2000 440"} {
		if !strings.Contains(out, want) {
			t.Errorf("user-namespaced container output lacks %q:\n%s", want, out)
		}
	}
}
