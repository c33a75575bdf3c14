//go:build integration && linux

package integration

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/integration/harness"
)

// TestLiveUpdateCLI is issue 14 as an operator drives it, the two halves
// together: the CLI's --live-update and signal=, the manager, the agent's
// swap in a container started through the shim, the agent's report back in
// `service ps` and the audit log. A rotation changes the running
// container's absolute single-file target and signals it; turning live
// update off leaves the next rotation to new containers only.
func TestLiveUpdateCLI(t *testing.T) {
	bin := harness.LockboxBin(t)
	m := harness.StartManager(t, bin)
	a := harness.StartAgent(t, bin, m)
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	cli := func(args ...string) string {
		t.Helper()
		out, err := m.CLI(ctx, args...)
		if err != nil {
			t.Fatalf("lockbox %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return out
	}
	for _, s := range []string{"tls_v1", "tls_v2", "tls_v3"} {
		if out, err := m.CLIStdin(ctx, []byte(s+"-bytes"), "secret", "create", s, "-"); err != nil {
			t.Fatalf("secret create %s: %v: %s", s, err, out)
		}
	}
	// The CLI refuses a signal without live update before sending.
	if out, err := m.CLI(ctx, "service", "create", "frontend", "--secret", "source=tls_v1,target=/etc/app/cert.pem,signal=SIGHUP"); err == nil || !strings.Contains(out+err.Error(), "live-update") {
		t.Fatalf("a signal without --live-update was accepted: %v: %s", err, out)
	}
	cli("service", "create", "frontend", "--live-update", "--secret", "source=tls_v1,target=/etc/app/cert.pem,signal=SIGHUP")

	// The container prints its file at start and on every SIGHUP, and
	// stops when it has seen v3 or after a minute.
	script := `trap 'echo "HUP $(cat /etc/app/cert.pem)"' HUP
echo "START $(cat /etc/app/cert.pem)"
i=0; while [ $i -lt 600 ]; do
  case "$(cat /etc/app/cert.pem)" in tls_v3-bytes) echo "END tls_v3-bytes"; exit 0;; esac
  sleep 0.1; i=$((i+1))
done; echo "END timeout $(cat /etc/app/cert.pem)"`
	done := make(chan string, 1)
	go func() {
		var out string
		var err error
		for try := 0; try < 100; try++ {
			args := append(append(c.ShimRunArgs(shimRuntime), "--annotation", "lockbox.service=frontend", busybox, fmt.Sprintf("front%d", try)), "sh", "-c", script)
			out, err = c.Ctr(ctx, "default", args...)
			if err == nil || !strings.Contains(err.Error(), "no grant") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			out += "\nctr: " + err.Error()
		}
		done <- out
	}()
	var id string
	a.WaitUntil(t, "the container held", func() error {
		held, err := a.List(ctx)
		if err == nil && len(held) == 0 {
			err = fmt.Errorf("no container held")
		}
		if err == nil {
			id = held[0]
		}
		return err
	})
	catchesSignal(t, a, heldPid(t, a, id), int(syscall.SIGHUP))

	cli("service", "update", "frontend", "--secret-rm", "tls_v1", "--secret-add", "source=tls_v2,target=/etc/app/cert.pem,signal=SIGHUP")
	// service ps shows the container on v2 once its agent reported.
	a.WaitUntil(t, "service ps to show tls_v2", func() error {
		out, err := m.CLI(ctx, "service", "ps", "--no-trunc", "frontend")
		if err == nil && (!strings.Contains(out, id) || !strings.Contains(out, "tls_v2@") || !strings.Contains(out, "Updated")) {
			err = fmt.Errorf("not yet: %s", out)
		}
		return err
	})
	audit := cli("audit", "ls")
	if !strings.Contains(audit, "live-update") || !strings.Contains(audit, "tls_v2") {
		t.Fatalf("audit log lacks the live update:\n%s", audit)
	}

	// Live update off (a signal then makes no sense: the managers refuse
	// it): v3 goes to new containers only; the running one keeps v2. Then
	// on again: v3 arrives and the container's loop sees it.
	cli("service", "update", "frontend", "--live-update=false", "--secret-rm", "tls_v2", "--secret-add", "source=tls_v3,target=/etc/app/cert.pem")
	time.Sleep(2 * time.Second) // a live update would land in milliseconds
	if ps := cli("service", "ps", "--no-trunc", "frontend"); !strings.Contains(ps, "tls_v2@") || strings.Contains(ps, "tls_v3@") {
		t.Fatalf("with live update off the running container changed:\n%s", ps)
	}
	select {
	case out := <-done:
		t.Fatalf("the container ended while live update was off: %s", out)
	default:
	}
	cli("service", "update", "frontend", "--live-update")
	select {
	case out := <-done:
		for _, want := range []string{"START tls_v1-bytes", "HUP tls_v2-bytes", "END tls_v3-bytes"} {
			if !strings.Contains(out, want) {
				t.Fatalf("container output lacks %q:\n%s", want, out)
			}
		}
	case <-time.After(90 * time.Second):
		t.Fatal("turning live update on did not bring tls_v3 to the running container")
	}
}
