//go:build integration && linux

package integration

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/plugin/ocispec"
)

// buildNRIPlugin builds plugin/nri/cmd/lockbox-nri into a temp dir.
func buildNRIPlugin(t *testing.T) string {
	out := filepath.Join(t.TempDir(), "lockbox-nri")
	cmd := exec.Command("go", "build", "-o", out, "github.com/lockbox-project/lockbox/plugin/nri/cmd/lockbox-nri")
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build lockbox-nri: %v\n%s", err, o)
	}
	return out
}

// e2eSetup starts a real manager with the test's secrets and services, and
// a real agent joined to it.
func e2eSetup(t *testing.T, bin string) (*harness.Manager, *harness.Agent) {
	m := harness.StartManager(t, bin)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for name, data := range map[string]string{"db_pw": "hunter2-db", "api_key": "api-key-bytes", "tls": "PEM-BYTES"} {
		if _, err := m.CLIStdin(ctx, []byte(data), "secret", "create", name, "-"); err != nil {
			t.Fatal(err)
		}
	}
	// web-k8s is web for the test's pods (namespace default): a pod may
	// claim only a service whose claim rules name its namespace.
	for _, svc := range [][]string{{"web"}, {"web-k8s", "--claim", "k8s.namespace==default"}} {
		args := append([]string{"service", "create", svc[0],
			"--secret", "source=db_pw",
			"--secret", "source=api_key,target=app/key,uid=1000,gid=1000,mode=0400",
			"--secret", "source=tls,target=/etc/app/tls.pem,mode=0440"}, svc[1:]...)
		if _, err := m.CLI(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	a := harness.StartAgent(t, bin, m)
	return m, a
}

// ctrRun runs a container through lockbox-runtime with ctr, claiming
// service (none when empty).
func ctrRun(ctx context.Context, c *harness.Containerd, bin, id, service string, cmd ...string) (string, error) {
	args := c.RunArgs(filepath.Join(bin, "lockbox-runtime"))
	if service != "" {
		args = append(args, "--annotation", "lockbox.service="+service)
	}
	args = append(append(args, busybox, id), cmd...)
	return c.Ctr(ctx, "default", args...)
}

// End to end: lockbox secret/service on a real manager, a real agent, the
// wrapper under ctr on containerd 2.4.2 and 1.6.
func TestEndToEnd(t *testing.T) {
	bin := harness.LockboxBin(t)
	m, a := e2eSetup(t, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	for _, flavor := range []harness.Flavor{harness.V2, harness.V16} {
		t.Run("ctr "+string(flavor), func(t *testing.T) {
			c := harness.StartContainerd(t, harness.Options{Flavor: flavor, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
			c.Import("default", harness.ImageConfig{Name: busybox})
			var out string
			n := 0
			a.WaitUntil(t, "the web service's grants", func() error {
				n++
				var err error
				out, err = ctrRun(ctx, c, bin, fmt.Sprintf("claim%d", n), "web", "sh", "-c", inspectScript)
				return err
			})
			checkInspect(t, out)

			out, err := ctrRun(ctx, c, bin, "plain", "", "sh", "-c", "ls /run/secrets 2>&1; true")
			if err != nil || !strings.Contains(out, "No such file") {
				t.Fatalf("non-claiming container: %v: %s", err, out)
			}

			_, err = ctrRun(ctx, c, bin, "denied", "payments", "true")
			var ce *harness.CtrError
			if !errors.As(err, &ce) || !strings.Contains(ce.Stderr, `"payments"`) {
				t.Fatalf("claiming a service with no grant: %v, want a failure naming it", err)
			}
			if held, err := a.List(ctx); err != nil || len(held) != 0 {
				t.Errorf("agent holds %v (%v) after every container was removed", held, err)
			}
		})
	}

	t.Run("Go client", func(t *testing.T) {
		c := harness.StartContainerd(t, harness.Options{Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
		c.Import("default", harness.ImageConfig{Name: busybox})
		cl, nsctx := c.Client("default")
		out, code, err := c.GoRun(nsctx, cl, busybox, "goclient", filepath.Join(bin, "lockbox-runtime"),
			oci.WithProcessArgs("sh", "-c", inspectScript), ocispec.WithService("web"))
		if err != nil || code != 0 {
			t.Fatalf("exit %d, %v: %s", code, err, out)
		}
		checkInspect(t, out)
	})

	t.Run("CRI with the standalone NRI plugin", func(t *testing.T) {
		nriBin := buildNRIPlugin(t)
		c := harness.StartContainerd(t, harness.Options{CRI: true, NRI: true, NRIRequired: []string{"lockbox"}})
		c.Import("k8s.io", harness.ImageConfig{Name: busybox})
		r := c.CRI()
		harness.StartProc(t, "lockbox-nri", filepath.Join(t.TempDir(), "nri.log"), nriBin,
			"--agent-socket", a.Socket, "--nri-socket", c.NRISocket)
		pod, err := r.RunPod(ctx, "e2e", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		var out string
		a.WaitUntil(t, "the NRI plugin to register", func() error {
			n++
			var code int32
			out, code, err = r.RunContainer(ctx, pod, fmt.Sprintf("app%d", n), busybox,
				harness.ContainerOptions{Annotations: map[string]string{"lockbox.service": "web-k8s"}}, "sh", "-c", inspectScript)
			if err == nil && code != 0 {
				err = fmt.Errorf("exit %d: %s", code, out)
			}
			return err
		})
		checkInspect(t, out)
	})

	t.Run("CRI with lockbox agent --nri", func(t *testing.T) {
		c := harness.StartContainerd(t, harness.Options{CRI: true, NRI: true, NRIRequired: []string{"lockbox"}})
		c.Import("k8s.io", harness.ImageConfig{Name: busybox})
		r := c.CRI()
		a2 := harness.StartAgent(t, bin, m, "--nri", "--nri-socket", c.NRISocket)
		pod, err := r.RunPod(ctx, "agentnri", "", map[string]string{"lockbox.service": "web-k8s"})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		var out string
		a2.WaitUntil(t, "the agent's NRI plugin and grants", func() error {
			n++
			var code int32
			out, code, err = r.RunContainer(ctx, pod, fmt.Sprintf("app%d", n), busybox, harness.ContainerOptions{}, "sh", "-c", inspectScript)
			if err == nil && code != 0 {
				err = fmt.Errorf("exit %d: %s", code, out)
			}
			return err
		})
		checkInspect(t, out)
		if held, err := a2.List(ctx); err != nil || len(held) != 0 {
			t.Errorf("agent holds %v (%v) after the container was removed", held, err)
		}
	})

	t.Run("service update affects new containers only", func(t *testing.T) {
		c := harness.StartContainerd(t, harness.Options{Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
		c.Import("default", harness.ImageConfig{Name: busybox})
		a.WaitUntil(t, "the web service's grants", func() error {
			_, err := ctrRun(ctx, c, bin, fmt.Sprintf("warm%d", time.Now().UnixNano()), "web", "true")
			return err
		})
		// A running container started before the update.
		if _, err := c.Ctr(ctx, "default", "run", "-d", "--runc-binary", filepath.Join(bin, "lockbox-runtime"), "--runc-root", c.RuncRoot,
			"--fifo-dir", c.FifoDir, "--annotation", "lockbox.service=web", busybox, "old", "sleep", "1000"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.CLI(ctx, "service", "update", "web", "--secret-rm", "tls"); err != nil {
			t.Fatal(err)
		}
		a.WaitUntil(t, "the update to reach new containers", func() error {
			out, err := ctrRun(ctx, c, bin, fmt.Sprintf("new%d", time.Now().UnixNano()), "web", "sh", "-c", "ls /etc/app/tls.pem 2>&1; true")
			if err != nil {
				return err
			}
			if !strings.Contains(out, "No such file") {
				return fmt.Errorf("new container still has tls: %q", out)
			}
			return nil
		})
		out, err := c.Ctr(ctx, "default", "tasks", "exec", "--exec-id", "x", "--fifo-dir", c.FifoDir, "old", "cat", "/etc/app/tls.pem")
		if err != nil || out != "PEM-BYTES" {
			t.Errorf("running container lost its secret on update: %q, %v", out, err)
		}
		if _, err := m.CLI(ctx, "service", "update", "web", "--secret-add", "source=tls,target=/etc/app/tls.pem,mode=0440"); err != nil {
			t.Fatal(err)
		}
		a.WaitUntil(t, "the secret to come back", func() error {
			out, err := ctrRun(ctx, c, bin, fmt.Sprintf("back%d", time.Now().UnixNano()), "web", "cat", "/etc/app/tls.pem")
			if err != nil {
				return err
			}
			if out != "PEM-BYTES" {
				return fmt.Errorf("got %q", out)
			}
			return nil
		})
		c.Ctr(ctx, "default", "tasks", "kill", "-s", "SIGKILL", "old")
	})

	t.Run("managers down", func(t *testing.T) {
		c := harness.StartContainerd(t, harness.Options{Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
		c.Import("default", harness.ImageConfig{Name: busybox})
		m.Stop()
		out, err := ctrRun(ctx, c, bin, "nomgr", "web", "cat", "/run/secrets/db_pw")
		if err != nil || out != "hunter2-db" {
			t.Fatalf("claiming container with every manager down: %q, %v", out, err)
		}
	})
}
