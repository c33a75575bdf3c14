//go:build integration && linux

package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/mounter"
)

// shimGrants are the test agent's services for the shim tests: web and ro
// as elsewhere, and users, whose one secret belongs to uid 1000 and whose
// other is root's, both 0400.
func shimGrants() map[string][]mounter.Grant {
	return map[string][]mounter.Grant{
		"web": testGrants["web"],
		"ro":  testGrants["ro"],
		"users": {
			{SecretID: "s1", SecretName: "db_pw", Target: "mine/pw", UID: "1000", GID: "1000", Mode: 0o400, Size: int64(len("hunter2-db"))},
			{SecretID: "s2", SecretName: "api_key", Target: "root/key", Mode: 0o400, Size: int64(len("api-key-bytes"))},
		},
	}
}

// nonRootScript runs as uid/gid 1000 in a container claiming users.
const nonRootScript = `id -u; id -g; cat /run/secrets/mine/pw; echo; cat /run/secrets/root/key 2>&1 || echo ROOT-KEY-DENIED
stat -c '%n %u %g %a' /run/secrets/mine/pw /run/secrets/root/key`

// checkNonRoot: the process is 1000:1000, reads its own 0400 secret and
// not root's.
func checkNonRoot(t *testing.T, out string) {
	t.Helper()
	if !strings.HasPrefix(out, "1000\n1000\n") {
		t.Errorf("process is not uid/gid 1000:\n%s", out)
	}
	for _, want := range []string{"hunter2-db", "Permission denied", "ROOT-KEY-DENIED",
		"/run/secrets/mine/pw 1000 1000 400", "/run/secrets/root/key 0 0 400"} {
		if !strings.Contains(out, want) {
			t.Errorf("container output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "api-key-bytes") {
		t.Errorf("uid 1000 read root's 0400 secret:\n%s", out)
	}
}

// checkNoTrace: a container whose claim failed left nothing: no runc init
// (in any cgroup of its ID), no runc state under runcRoot, no task.
func checkNoTrace(ctx context.Context, t *testing.T, c *harness.Containerd, ns, runcRoot, id string) {
	t.Helper()
	if pids := runcInits("/" + id); len(pids) != 0 {
		t.Errorf("runc init of %s still runs: %v", id, pids)
	}
	if _, err := os.Stat(filepath.Join(runcRoot, ns, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("runc state of %s remains (%v)", id, err)
	}
	if out, err := c.Ctr(ctx, ns, "tasks", "ls", "-q"); err != nil || strings.Contains(out, id) {
		t.Errorf("containerd still lists task %s (%v): %s", id, err, out)
	}
}

// The shim as a CRI runtime handler on containerd 2.4.2, driven by the real
// crictl: runtime_type io.containerd.lockbox.v2 with its options table
// (CRI sends it as runtimeoptions.v1.Options), the claim in a pod or
// container annotation allowed into the spec by pod_annotations and
// container_annotations, one shim per pod, pause containers unclaimed.
func TestShimCRI(t *testing.T) {
	bin := harness.LockboxBin(t)
	if _, err := os.Stat(filepath.Join(bin, "containerd-shim-lockbox-v2")); err != nil {
		t.Fatalf("%v (make build)", err)
	}
	a := harness.StartTestAgent(t, shimGrants(), testSecrets)
	// A second handler whose options table has a typo: the shim names it.
	const typoTable = "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.lockbox-typo]\n  runtime_type = 'io.containerd.lockbox.v2'\n" +
		"[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.lockbox-typo.options]\n  BinaryNmae = 'runc'\n"
	// A third whose options are in a file (ConfigPath): runc's Root there.
	optsDir := t.TempDir()
	fileRoot := filepath.Join(optsDir, "runc")
	optsFile := filepath.Join(optsDir, "lockbox.toml")
	if err := os.WriteFile(optsFile, []byte("Root = "+strconv.Quote(fileRoot)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fileTable := "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.lockbox-file]\n  runtime_type = 'io.containerd.lockbox.v2'\n  container_annotations = ['lockbox.service']\n" +
		"[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.lockbox-file.options]\n  ConfigPath = " + strconv.Quote(optsFile) + "\n"
	c := harness.StartContainerd(t, harness.Options{CRI: true, ShimHandler: "lockbox", ShimDir: bin,
		ExtraConfig: typoTable + fileTable, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("k8s.io", harness.ImageConfig{Name: busybox})
	k := c.Crictl()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	claims := func(svc string) map[string]string { return map[string]string{"lockbox.service": svc} }
	uid := int64(1000)
	// stopPod removes pod and waits for its shim to exit, so that each
	// case counts only its own.
	stopPod := func(t *testing.T, pod *harness.CrictlPod) {
		t.Helper()
		if err := k.StopPod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		waitCond(t, "no shim left after the pod's removal", func() error {
			if pids := c.Shims(); len(pids) != 0 {
				return fmt.Errorf("shims %v still run", pids)
			}
			return nil
		})
	}

	t.Run("runtime handler introspected", func(t *testing.T) {
		// CRI asks every handler's shim for runc's features with -info at
		// start, sending the options table; a shim that cannot read it
		// leaves the handler without features (userns, rro).
		out, err := k.Run(ctx, "info")
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range []string{"runc", "lockbox"} {
			if !handlerHasFeatures(t, out, h) {
				t.Errorf("handler %s has no features in crictl info:\n%s", h, out)
			}
		}
	})

	t.Run("claim read by a non-root user", func(t *testing.T) {
		pod, err := k.RunPod(ctx, "users", "lockbox", claims("users"))
		if err != nil {
			t.Fatal(err)
		}
		// The pause container has the pod's annotation in its spec too,
		// and passes unclaimed.
		if held := a.HeldReleased(); len(held) != 0 {
			t.Fatalf("agent holds %v after the pod's sandbox started", held)
		}
		// A claiming container that keeps running, then one that reads.
		sleeper, err := k.Create(ctx, pod, harness.CrictlContainer{Name: "sleeper", Image: busybox, Command: []string{"sleep", "600"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.Run(ctx, "start", sleeper); err != nil {
			t.Fatal(err)
		}
		if held := a.Held(); !slices.Contains(held, sleeper) {
			t.Fatalf("agent holds %v, not the running claiming container %s", held, sleeper)
		}
		out, code, err := k.RunContainer(ctx, pod, harness.CrictlContainer{Name: "reader", Image: busybox,
			Command: []string{"sh", "-c", nonRootScript}, RunAsUser: &uid, RunAsGroup: &uid})
		if err != nil || code != 0 {
			t.Fatalf("reader: exit %d, %v\n%s", code, err, out)
		}
		checkNonRoot(t, out)
		// One shim serves the pod: pause, sleeper and reader.
		if shims := c.Shims(); len(shims) != 1 {
			t.Errorf("%d shims serve one pod: %v", len(shims), shims)
		}
		for _, args := range [][]string{{"stop", sleeper}, {"rm", sleeper}} {
			if _, err := k.Run(ctx, args...); err != nil {
				t.Fatal(err)
			}
		}
		if held := a.HeldReleased(); len(held) != 0 {
			t.Errorf("agent holds %v after crictl rm", held)
		}
		stopPod(t, pod)
	})

	t.Run("claim in a container annotation", func(t *testing.T) {
		pod, err := k.RunPod(ctx, "plain-pod", "lockbox", nil)
		if err != nil {
			t.Fatal(err)
		}
		out, code, err := k.RunContainer(ctx, pod, harness.CrictlContainer{Name: "web", Image: busybox,
			Command: []string{"sh", "-c", inspectScript}, Annotations: claims("web")})
		if err != nil || code != 0 {
			t.Fatalf("exit %d, %v\n%s", code, err, out)
		}
		checkInspect(t, out)
		out, code, err = k.RunContainer(ctx, pod, harness.CrictlContainer{Name: "ro", Image: busybox, ReadonlyRootfs: true,
			Command: []string{"sh", "-c", "cat /run/secrets/db_pw; touch /x 2>&1; true"}, Annotations: claims("ro")})
		if err != nil || code != 0 || !strings.Contains(out, "hunter2-db") || !strings.Contains(out, "Read-only") {
			t.Fatalf("read-only claiming container: exit %d, %v\n%s", code, err, out)
		}
		// Not claiming, in the same runtime.
		out, code, err = k.RunContainer(ctx, pod, harness.CrictlContainer{Name: "plain", Image: busybox,
			Command: []string{"sh", "-c", "ls /run/secrets 2>&1; true"}})
		if err != nil || code != 0 || !strings.Contains(out, "No such file") {
			t.Fatalf("non-claiming container: exit %d, %v\n%s", code, err, out)
		}
		stopPod(t, pod)
	})

	t.Run("options from ConfigPath", func(t *testing.T) {
		pod, err := k.RunPod(ctx, "file", "lockbox-file", nil)
		if err != nil {
			t.Fatal(err)
		}
		id, err := k.Create(ctx, pod, harness.CrictlContainer{Name: "sleeper", Image: busybox, Command: []string{"sleep", "600"}, Annotations: claims("web")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.Run(ctx, "start", id); err != nil {
			t.Fatal(err)
		}
		state := filepath.Join(fileRoot, "k8s.io", id)
		if _, err := os.Stat(state); err != nil {
			t.Errorf("runc state not in the Root of the ConfigPath file: %v", err)
		}
		if held := a.Held(); !slices.Contains(held, id) {
			t.Errorf("agent holds %v, not the running claiming container %s", held, id)
		}
		for _, args := range [][]string{{"stop", id}, {"rm", id}} {
			if _, err := k.Run(ctx, args...); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("runc state of %s remains after crictl rm (%v)", id, err)
		}
		stopPod(t, pod)
	})

	t.Run("not granted", func(t *testing.T) {
		pod, err := k.RunPod(ctx, "denied", "lockbox", claims("payments"))
		if err != nil {
			t.Fatalf("the sandbox of a pod claiming an ungranted service must start (it claims nothing): %v", err)
		}
		id, err := k.Create(ctx, pod, harness.CrictlContainer{Name: "denied", Image: busybox, Command: []string{"true"}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = k.Run(ctx, "start", id)
		var ce *harness.CrictlError
		if !errors.As(err, &ce) || !strings.Contains(unquote(ce.Stderr), `"payments"`) {
			t.Fatalf("start of a container claiming an ungranted service: %v, want a failure naming it", err)
		}
		t.Logf("refused as it should be: %s", strings.TrimSpace(ce.Stderr))
		checkNoTrace(ctx, t, c, "k8s.io", c.RuncRoot, id)
		// The pod's shim serves its sandbox still; nothing else runs.
		if shims := c.Shims(); len(shims) != 1 {
			t.Errorf("%d shims for one pod after the refused start: %v", len(shims), shims)
		}
		if held := a.HeldReleased(); len(held) != 0 {
			t.Errorf("agent holds %v after a refused claim", held)
		}
		if _, err := k.Run(ctx, "rm", id); err != nil {
			t.Error(err)
		}
		stopPod(t, pod)
	})

	t.Run("unknown runtime option", func(t *testing.T) {
		_, err := k.RunPod(ctx, "typo", "lockbox-typo", nil)
		var ce *harness.CrictlError
		if !errors.As(err, &ce) || !strings.Contains(unquote(ce.Stderr), `"BinaryNmae"`) {
			t.Fatalf("pod under a handler whose options have a typo: %v, want a failure naming the key", err)
		}
		t.Logf("refused as it should be: %s", strings.TrimSpace(ce.Stderr))
	})

	if held := a.HeldReleased(); len(held) != 0 {
		t.Errorf("agent holds %v after every container was removed", held)
	}

	t.Run("agent down", func(t *testing.T) {
		a.Stop()
		pod, err := k.RunPod(ctx, "down", "lockbox", nil)
		if err != nil {
			t.Fatal(err)
		}
		id, err := k.Create(ctx, pod, harness.CrictlContainer{Name: "claims", Image: busybox, Command: []string{"true"}, Annotations: claims("users")})
		if err != nil {
			t.Fatal(err)
		}
		_, err = k.Run(ctx, "start", id)
		var ce *harness.CrictlError
		if !errors.As(err, &ce) || !strings.Contains(ce.Stderr, "lockbox agent not reachable") || !strings.Contains(unquote(ce.Stderr), `"users"`) {
			t.Fatalf("claiming container with the agent down: %v, want a failure saying the agent is not reachable", err)
		}
		t.Logf("refused as it should be: %s", strings.TrimSpace(ce.Stderr))
		checkNoTrace(ctx, t, c, "k8s.io", c.RuncRoot, id)
		out, code, err := k.RunContainer(ctx, pod, harness.CrictlContainer{Name: "plain", Image: busybox, Command: []string{"echo", "still-runs"}})
		if err != nil || code != 0 || !strings.Contains(out, "still-runs") {
			t.Fatalf("non-claiming container with the agent down: exit %d, %v\n%s", code, err, out)
		}
	})
}

// unquote undoes the quoting of the runtime's error inside crictl's log
// line (err="... \"payments\" ...").
func unquote(s string) string { return strings.ReplaceAll(s, `\"`, `"`) }

// handlerHasFeatures reports whether crictl info lists runtime handler
// name with features (CRI fills them from the shim's -info).
func handlerHasFeatures(t *testing.T, info, name string) bool {
	t.Helper()
	var v struct {
		RuntimeHandlers []struct {
			Name     string         `json:"name"`
			Features map[string]any `json:"features"`
		} `json:"runtimeHandlers"`
	}
	if err := json.Unmarshal([]byte(info), &v); err != nil {
		t.Fatalf("crictl info: %v", err)
	}
	for _, h := range v.RuntimeHandlers {
		if h.Name == name {
			return h.Features != nil
		}
	}
	t.Fatalf("crictl info lists no handler %s:\n%s", name, info)
	return false
}
