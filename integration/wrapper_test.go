//go:build integration && linux

package integration

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/mounter"
)

// These tests drive lockbox-runtime under real containerd and runc against
// harness.TestAgent (the real local API and tmpfs mounter with fixed grants),
// so that a failure points at the containerd side. The same scenarios run
// against the real manager and agent in e2e_test.go.

var testGrants = map[string][]mounter.Grant{
	"web": {
		{SecretID: "s1", SecretName: "db_pw", Size: int64(len("hunter2-db"))},
		{SecretID: "s2", SecretName: "api_key", Target: "app/key", UID: "1000", GID: "1000", Mode: 0o400, Size: int64(len("api-key-bytes"))},
		{SecretID: "s3", SecretName: "tls", Target: "/etc/app/tls.pem", Mode: 0o440, Size: int64(len("PEM-BYTES"))},
	},
}

// The read-only rootfs cases claim the targets under /run/secrets; an
// absolute target whose directory the image lacks (/etc/app) is
// layout_test.go's.
func init() {
	testGrants["ro"] = testGrants["web"][:2]
}

var testSecrets = map[string][]byte{"s1": []byte("hunter2-db"), "s2": []byte("api-key-bytes"), "s3": []byte("PEM-BYTES")}

const inspectScript = `cat /run/secrets/db_pw; echo; cat /run/secrets/app/key; echo; cat /etc/app/tls.pem; echo;
stat -c '%n %u %g %a' /run/secrets/db_pw /run/secrets/app/key /etc/app/tls.pem`

func checkInspect(t *testing.T, out string) {
	t.Helper()
	for _, want := range []string{
		"hunter2-db", "api-key-bytes", "PEM-BYTES",
		"/run/secrets/db_pw 0 0 444",
		"/run/secrets/app/key 1000 1000 400",
		"/etc/app/tls.pem 0 0 440",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("container output lacks %q:\n%s", want, out)
		}
	}
}

func TestWrapperWithTestAgent(t *testing.T) {
	bin := harness.LockboxBin(t)
	runtimeBin := filepath.Join(bin, "lockbox-runtime")
	a := harness.StartTestAgent(t, testGrants, testSecrets)
	for _, flavor := range []harness.Flavor{harness.V2, harness.V16} {
		for _, mode := range []string{"attach", "hook"} {
			t.Run(string(flavor)+"/"+mode, func(t *testing.T) {
				c := harness.StartContainerd(t, harness.Options{Flavor: flavor, Env: []string{
					"LOCKBOX_AGENT_SOCKET=" + a.Socket,
					"LOCKBOX_RUNTIME_MODE=" + mode,
					"LOCKBOX_HOOK_LOG=" + filepath.Join(t.TempDir(), "hook.log"),
				}})
				c.Import("default", harness.ImageConfig{Name: busybox})
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				run := func(id string, extra []string, cmd ...string) (string, error) {
					args := append(c.RunArgs(runtimeBin), extra...)
					args = append(append(args, busybox, id), cmd...)
					return c.Ctr(ctx, "default", args...)
				}

				out, err := run("claim", []string{"--annotation", "lockbox.service=web"}, "sh", "-c", inspectScript)
				if err != nil {
					t.Fatal(err)
				}
				checkInspect(t, out)

				out, err = run("ro", []string{"--read-only", "--annotation", "lockbox.service=ro"}, "sh", "-c", "cat /run/secrets/db_pw; touch /x 2>&1; true")
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(out, "hunter2-db") || !strings.Contains(out, "Read-only") {
					t.Errorf("read-only rootfs: %q", out)
				}

				_, err = run("denied", []string{"--annotation", "lockbox.service=other"}, "true")
				var ce *harness.CtrError
				if !errors.As(err, &ce) || !strings.Contains(ce.Stderr, `"other"`) || !strings.Contains(ce.Stderr, "not granted") {
					t.Fatalf("claiming an ungranted service: err = %v, want a failure naming the service", err)
				}

				if held := a.Held(); len(held) != 0 {
					t.Errorf("agent still holds mounts after the containers were removed: %v", held)
				}
			})
		}
	}
}
