//go:build integration && linux

package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/pkg/oci"
	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
	"github.com/lockbox-project/lockbox/plugin/ocispec"
)

// proxyRuntime is the runtime type of containerd-shim-lockbox-v1, the
// proxy shim (plugin/shimproxy). On Linux its inner shim is containerd's
// runc shim, so the proxy's mechanics (start the inner shim, forward the
// task API, intercept create, exit and delete, clean up after a proxy
// that died) run here for real; on Windows the inner shim is runhcs.
const proxyRuntime = "io.containerd.lockbox.v1"

// startProxyContainerd starts a containerd 2.4.2 that finds the built
// proxy (and, on its PATH, containerd-shim-runc-v2), with a test agent
// serving shimGrants, and busybox in "default".
func startProxyContainerd(t testing.TB) (*harness.Containerd, *harness.TestAgent) {
	bin := harness.LockboxBin(t)
	if _, err := os.Stat(filepath.Join(bin, "containerd-shim-lockbox-v1")); err != nil {
		t.Fatalf("%v (make build)", err)
	}
	a := harness.StartTestAgent(t, shimGrants(), testSecrets)
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})
	return c, a
}

// noShimLeft waits for every shim of c (the proxies and their runc shims:
// both run with containerd's -address) to exit.
func noShimLeft(t *testing.T, c *harness.Containerd) {
	t.Helper()
	waitCond(t, "no shim left", func() error {
		if pids := c.Shims(); len(pids) != 0 {
			return fmt.Errorf("shims %v still run", pids)
		}
		return nil
	})
}

// The proxy around the runc shim, through ctr: a claim (secrets readable
// with the grant's uid, gid and mode), a container that claims nothing, a
// claim not granted (fails closed: no shim, runc init, runc state or task
// left, the agent holds nothing), an exit (the agent lets go before any
// delete) and a delete.
func TestShimProxyCtr(t *testing.T) {
	c, a := startProxyContainerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := func(id, service string, cmd ...string) (string, error) {
		args := c.ShimRunArgs(proxyRuntime)
		if service != "" {
			args = append(args, "--annotation", "lockbox.service="+service)
		}
		args = append(append(args, busybox, id), cmd...)
		return c.Ctr(ctx, "default", args...)
	}

	t.Run("claim", func(t *testing.T) {
		out, err := run("px-claim", "web", "sh", "-c", inspectScript)
		if err != nil {
			t.Fatal(err)
		}
		checkInspect(t, out)
		if held := a.Held(); len(held) != 0 {
			t.Errorf("agent holds %v after ctr run --rm", held)
		}
	})

	t.Run("claim with a read-only root", func(t *testing.T) {
		// The proxy has the runc create make the mountpoints (read-only
		// binds of the agent's empty file) before the root turns read-only.
		args := append(c.ShimRunArgs(proxyRuntime), "--read-only", "--annotation", "lockbox.service=ro",
			busybox, "px-ro", "sh", "-c", "cat /run/secrets/db_pw; touch /x 2>&1; true")
		out, err := c.Ctr(ctx, "default", args...)
		if err != nil || !strings.Contains(out, "hunter2-db") || !strings.Contains(out, "Read-only") {
			t.Fatalf("read-only claiming container: %v: %s", err, out)
		}
	})

	t.Run("not claiming", func(t *testing.T) {
		out, err := run("px-plain", "", "sh", "-c", "ls /run/secrets 2>&1; true")
		if err != nil || !strings.Contains(out, "No such file") {
			t.Fatalf("non-claiming container: %v: %s", err, out)
		}
	})

	t.Run("not granted", func(t *testing.T) {
		const id = "px-denied"
		mounts := mountsUnder(t, c.Dir)
		_, err := run(id, "payments", "true")
		var ce *harness.CtrError
		if !errors.As(err, &ce) || !strings.Contains(ce.Stderr, `"payments"`) {
			t.Fatalf("claiming a service with no grant: %v, want a failure naming it", err)
		}
		t.Logf("refused as it should be: %s", strings.TrimSpace(ce.Stderr))
		noShimLeft(t, c)
		checkNoTrace(ctx, t, c, "default", runcDefaultRoot, id)
		if held := a.Held(); len(held) != 0 {
			t.Errorf("agent holds %v after a refused claim", held)
		}
		c.Ctr(ctx, "default", "containers", "delete", id)
		if got := mountsUnder(t, c.Dir); got != mounts {
			t.Errorf("%d mounts under %s after the refused claim, %d before", got, c.Dir, mounts)
		}
	})

	t.Run("exit releases, then delete", func(t *testing.T) {
		const id = "px-exit"
		args := []string{"run", "-d", "--runtime", proxyRuntime, "--fifo-dir", c.FifoDir,
			"--annotation", "lockbox.service=web", busybox, id, "sleep", "600"}
		if out, err := c.Ctr(ctx, "default", args...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		pid := taskPid(ctx, t, c, id)
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", pid)); err != nil || string(b) != "hunter2-db" {
			t.Fatalf("secret in the running container: %q, %v", b, err)
		}
		if held := a.Held(); len(held) != 1 || held[0] != id {
			t.Fatalf("agent holds %v, want [%s]", held, id)
		}
		if out, err := c.Ctr(ctx, "default", "tasks", "kill", "-s", "SIGKILL", id); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		// The test agent has no exit watch: only the proxy's wait on the
		// runc shim can release here.
		waitCond(t, "the agent to let go at the exit", func() error {
			if held := a.Held(); len(held) != 0 {
				return fmt.Errorf("agent holds %v", held)
			}
			return nil
		})
		for _, args := range [][]string{{"tasks", "delete", id}, {"containers", "delete", id}} {
			if out, err := c.Ctr(ctx, "default", args...); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		noShimLeft(t, c)
		checkNoTrace(ctx, t, c, "default", runcDefaultRoot, id)
	})

	t.Run("delete of a running container", func(t *testing.T) {
		const id = "px-delete"
		args := []string{"run", "-d", "--runtime", proxyRuntime, "--fifo-dir", c.FifoDir,
			"--annotation", "lockbox.service=web", busybox, id, "sleep", "600"}
		if out, err := c.Ctr(ctx, "default", args...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if held := a.Held(); len(held) != 1 || held[0] != id {
			t.Fatalf("agent holds %v, want [%s]", held, id)
		}
		if out, err := c.Ctr(ctx, "default", "tasks", "delete", "--force", id); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if held := a.Held(); len(held) != 0 {
			t.Errorf("agent holds %v once the delete answered", held)
		}
		c.Ctr(ctx, "default", "containers", "delete", id)
		noShimLeft(t, c)
		checkNoTrace(ctx, t, c, "default", runcDefaultRoot, id)
	})

	if held := a.Held(); len(held) != 0 {
		t.Errorf("agent holds %v after every container was removed", held)
	}
}

// The proxy through containerd's Go client: a claim read by a non-root
// user (uid, gid and mode of the grant), runc's options passed through to
// the inner shim, and a claim not granted.
func TestShimProxyGoClient(t *testing.T) {
	c, a := startProxyContainerd(t)
	cl, ctx := c.Client("default")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()

	t.Run("claim read by a non-root user", func(t *testing.T) {
		out, code, err := c.GoRunRuntime(ctx, cl, busybox, "pxgo-users", proxyRuntime, nil,
			oci.WithProcessArgs("sh", "-c", nonRootScript), oci.WithUIDGID(1000, 1000), ocispec.WithService("users"))
		if err != nil || code != 0 {
			t.Fatalf("exit %d, %v: %s", code, err, out)
		}
		checkNonRoot(t, out)
	})

	t.Run("claim with runc options", func(t *testing.T) {
		const id = "pxgo-web"
		out, code, err := c.GoRunRuntime(ctx, cl, busybox, id, proxyRuntime, &options.Options{Root: c.RuncRoot},
			oci.WithProcessArgs("sh", "-c", inspectScript), ocispec.WithService("web"))
		if err != nil || code != 0 {
			t.Fatalf("exit %d, %v: %s", code, err, out)
		}
		checkInspect(t, out)
		checkNoTrace(ctx, t, c, "default", c.RuncRoot, id)
	})

	t.Run("not granted", func(t *testing.T) {
		const id = "pxgo-denied"
		_, _, err := c.GoRunRuntime(ctx, cl, busybox, id, proxyRuntime, nil, oci.WithProcessArgs("true"), ocispec.WithService("payments"))
		if err == nil || !strings.Contains(err.Error(), `"payments"`) {
			t.Fatalf("claiming a service with no grant: %v, want a failure naming it", err)
		}
		t.Logf("refused as it should be: %v", err)
		noShimLeft(t, c)
		checkNoTrace(ctx, t, c, "default", runcDefaultRoot, id)
	})

	noShimLeft(t, c)
	if held := a.Held(); len(held) != 0 {
		t.Errorf("agent holds %v after every container was removed", held)
	}
}

// The proxy of a running claiming container is killed with SIGKILL.
// containerd finds it dead and runs the proxy's delete (the manager's
// Stop), which takes the task out of the runc shim that still runs it,
// runs the runc shim's own delete and releases from the record in the
// bundle: nothing is left (no shim, runc init, runc state or task, and the
// agent holds nothing), and the container can be removed.
//
// Then the same with the runc shim behind a proxy killed instead: the
// proxy follows it (its connection to the inner shim closed), and the
// same cleanup leaves nothing.
func TestShimProxyKilled(t *testing.T) {
	for _, tc := range []struct{ name, kill string }{
		{"proxy", "containerd-shim-lockbox-v1"},
		{"inner shim", "containerd-shim-runc-v2"},
	} {
		t.Run(tc.name, func(t *testing.T) { testShimProxyKilled(t, tc.kill) })
	}
}

func testShimProxyKilled(t *testing.T, kill string) {
	c, a := startProxyContainerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const id = "px-killed"
	mounts := mountsUnder(t, c.Dir)
	args := []string{"run", "-d", "--runtime", proxyRuntime, "--fifo-dir", c.FifoDir,
		"--annotation", "lockbox.service=web", busybox, id, "sleep", "600"}
	if out, err := c.Ctr(ctx, "default", args...); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	pid := taskPid(ctx, t, c, id)
	if held := a.Held(); len(held) != 1 || held[0] != id {
		t.Fatalf("agent holds %v, want [%s]", held, id)
	}
	proxies := procsNamed("containerd-shim-lockbox-v1", id)
	inner := procsNamed("containerd-shim-runc-v2", id)
	if len(proxies) != 1 || len(inner) != 1 {
		t.Fatalf("proxy processes %v and runc shims %v of %s, want one each", proxies, inner, id)
	}
	victim := proxies[0]
	if kill != "containerd-shim-lockbox-v1" {
		victim = inner[0]
	}
	if err := unix.Kill(victim, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitCond(t, "the agent to let go of the container", func() error {
		if held := a.Held(); len(held) != 0 {
			return fmt.Errorf("agent holds %v", held)
		}
		return nil
	})
	waitInitEnded(t, id, pid)
	waitCond(t, "containerd to drop the task", func() error {
		out, err := c.Ctr(ctx, "default", "tasks", "ls", "-q")
		if err != nil {
			return err
		}
		if strings.Contains(out, id) {
			return fmt.Errorf("task listed: %s", out)
		}
		return nil
	})
	noShimLeft(t, c)
	checkNoTrace(ctx, t, c, "default", runcDefaultRoot, id)
	if out, err := c.Ctr(ctx, "default", "containers", "delete", id); err != nil {
		t.Errorf("remove the container: %v: %s", err, out)
	}
	if got := mountsUnder(t, c.Dir); got != mounts {
		t.Errorf("%d mounts under %s after the cleanup, %d before the container", got, c.Dir, mounts)
	}
}

// The proxy as a CRI runtime handler, driven by the real crictl: a pod
// whose annotation claims a service (the pause container passes
// unclaimed), one proxy and one runc shim per pod, a claim not granted
// refused naming the service, and a handler with an options table refused
// with the fix in the error (the inner shim would crash on CRI's generic
// options).
func TestShimProxyCRI(t *testing.T) {
	bin := harness.LockboxBin(t)
	if _, err := os.Stat(filepath.Join(bin, "containerd-shim-lockbox-v1")); err != nil {
		t.Fatalf("%v (make build)", err)
	}
	a := harness.StartTestAgent(t, shimGrants(), testSecrets)
	const table = "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.lockbox-proxy]\n  runtime_type = '" + proxyRuntime + "'\n" +
		"  pod_annotations = ['lockbox.service']\n  container_annotations = ['lockbox.service']\n" +
		"[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.lockbox-proxy-opts]\n  runtime_type = '" + proxyRuntime + "'\n" +
		"[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.lockbox-proxy-opts.options]\n  BinaryName = 'runc'\n"
	c := harness.StartContainerd(t, harness.Options{CRI: true, ShimDir: bin, ExtraConfig: table,
		Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("k8s.io", harness.ImageConfig{Name: busybox})
	k := c.Crictl()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	pod, err := k.RunPod(ctx, "web", "lockbox-proxy", map[string]string{"lockbox.service": "web"})
	if err != nil {
		t.Fatal(err)
	}
	if held := a.Held(); len(held) != 0 {
		t.Fatalf("agent holds %v after the pod's sandbox started", held)
	}
	out, code, err := k.RunContainer(ctx, pod, harness.CrictlContainer{Name: "web", Image: busybox, Command: []string{"sh", "-c", inspectScript}})
	if err != nil || code != 0 {
		t.Fatalf("exit %d, %v\n%s", code, err, out)
	}
	checkInspect(t, out)
	// One proxy and the runc shim behind it serve the pod.
	if shims := c.Shims(); len(shims) != 2 {
		t.Errorf("%d shims serve one pod through the proxy: %v, want the proxy and runc's", len(shims), shims)
	}
	_, _, err = k.RunContainer(ctx, pod, harness.CrictlContainer{Name: "denied", Image: busybox, Command: []string{"true"},
		Annotations: map[string]string{"lockbox.service": "payments"}})
	// crictl prints the error quoted: the service's quotes come escaped.
	if err == nil || !strings.Contains(err.Error(), "claims service") || !strings.Contains(err.Error(), "payments") {
		t.Fatalf("claiming a service with no grant: %v, want a failure naming it", err)
	}
	t.Logf("refused as it should be: %v", err)
	if err := k.StopPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	noShimLeft(t, c)
	if held := a.Held(); len(held) != 0 {
		t.Errorf("agent holds %v after the pod's removal", held)
	}

	if _, err := k.RunPod(ctx, "opts", "lockbox-proxy-opts", nil); err == nil || !strings.Contains(err.Error(), "options table out") {
		t.Errorf("pod on a handler with an options table: %v, want the proxy's refusal", err)
	}
	noShimLeft(t, c)
}

// procsNamed lists the processes whose executable's base name is name and
// whose arguments include "-id id".
func procsNamed(name, id string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
		if len(args) == 0 || filepath.Base(string(args[0])) != name {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if string(args[i]) == "-id" && string(args[i+1]) == id {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// BenchmarkShimProxyCost measures a container's life (create, start,
// exit, delete, through the Go client) under the proxy against the runc
// shim itself and the Lockbox runc shim (io.containerd.lockbox.v2),
// alternating variants in every round so that load on the machine falls
// on all alike; b.N rounds after one warm-up round. It reports each
// variant's median over the runc shim's:
// `LOCKBOX_BIN=$PWD/bin go test -tags integration -run '^$' -bench ShimProxyCost -benchtime 30x ./integration/`.
func BenchmarkShimProxyCost(b *testing.B) {
	c, _ := startProxyContainerd(b)
	cl, ctx := c.Client("default")
	type variant struct {
		name, metric, runtime string
		opts                  []oci.SpecOpts
	}
	variants := []variant{
		{"runc shim", "", "io.containerd.runc.v2", nil},
		{"proxy, not claiming", "proxy-plain/runc-shim", proxyRuntime, nil},
		{"lockbox.v2 shim, claiming", "v2-claim/runc-shim", shimRuntime, []oci.SpecOpts{ocispec.WithService("web")}},
		{"proxy, claiming", "proxy-claim/runc-shim", proxyRuntime, []oci.SpecOpts{ocispec.WithService("web")}},
	}
	took := make([][]time.Duration, len(variants))
	round := func(i int, keep bool) {
		for j, v := range variants {
			id := fmt.Sprintf("cost%d-%d", j, i)
			opts := append([]oci.SpecOpts{oci.WithProcessArgs("true")}, v.opts...)
			start := time.Now()
			out, code, err := c.GoRunRuntime(ctx, cl, busybox, id, v.runtime, nil, opts...)
			d := time.Since(start)
			if err != nil || code != 0 {
				b.Fatalf("%s: exit %d, %v: %s", v.name, code, err, out)
			}
			if keep {
				took[j] = append(took[j], d)
			}
		}
	}
	round(0, false) // warms caches
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		round(i, true)
	}
	b.StopTimer()
	median := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	base := median(took[0])
	b.Logf("%s", benchinfo.Machine())
	for j, v := range variants {
		m := median(took[j])
		b.Logf("%-28s median %6.1f ms over %d runs (%.3fx the runc shim, %+.1f ms)", v.name, float64(m)/1e6, len(took[j]), float64(m)/float64(base), float64(m-base)/1e6)
		if v.metric != "" {
			b.ReportMetric(float64(m)/float64(base), v.metric)
		}
	}
}
