//go:build linux

package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
	"github.com/lockbox-project/lockbox/mounter"
	"github.com/lockbox-project/lockbox/plugin/ocispec"
)

const image = "docker.io/library/busybox:bench"

// runtimeBinary returns bin/lockbox-runtime from LOCKBOX_BIN, or builds it.
func runtimeBinary(b *testing.B) string {
	if dir := os.Getenv("LOCKBOX_BIN"); dir != "" {
		return filepath.Join(dir, "lockbox-runtime")
	}
	out := filepath.Join(b.TempDir(), "lockbox-runtime")
	_, file, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-o", out, "./cmd/lockbox-runtime")
	// Static: a cgo build pays the dynamic loader on every exec (about 0.9 ms here).
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..")
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build lockbox-runtime: %v\n%s", err, o)
	}
	return out
}

// tenSecrets is the service the claiming variant uses: 10 secrets of 4 KiB.
func tenSecrets() (map[string][]mounter.Grant, map[string][]byte) {
	grants := map[string][]mounter.Grant{}
	secrets := map[string][]byte{}
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("s%d", i)
		secrets[id] = make([]byte, 4096)
		for j := range secrets[id] {
			secrets[id][j] = byte('a' + (i+j)%26)
		}
		grants["bench"] = append(grants["bench"], mounter.Grant{SecretID: id, SecretName: "secret" + id, Size: 4096})
	}
	return grants, secrets
}

type variant struct {
	name    string
	c       *harness.Containerd
	runtime string
	claim   bool
}

// BenchmarkContainerLifecycle measures create→start→exit→delete with the Go
// client for: runc itself (baseline), lockbox-runtime with a container that
// claims nothing, lockbox-runtime claiming a service of 10 x 4 KiB secrets
// (attach after create, the default), and the same with the createContainer
// hook. Variants alternate in each iteration, in a random order. Run with
// -benchtime=Nx (N iterations of every variant).
//
// LOCKBOX_BENCH_COMPARE=PATH adds two variants run through another
// lockbox-runtime build (an older commit, a different build flag):
// compare-plain and compare-claim-attach, in the same alternation.
// LOCKBOX_BENCH_REAL_AGENT=1 (with LOCKBOX_BIN holding lockbox) adds
// real-agent-claim-attach: the same claim served by a real manager and
// "lockbox agent" instead of the in-process test agent.
func BenchmarkContainerLifecycle(b *testing.B) {
	bin := runtimeBinary(b)
	runc, err := exec.LookPath("runc")
	if err != nil {
		b.Fatalf("runc not found: run make deps: %v", err)
	}
	grants, secrets := tenSecrets()
	a := harness.StartTestAgent(b, grants, secrets)
	env := func(mode string) []string {
		return []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket, "LOCKBOX_RUNTIME_MODE=" + mode, "LOCKBOX_HOOK_LOG=/dev/null"}
	}
	ca := harness.StartContainerd(b, harness.Options{Env: env("attach")})
	ch := harness.StartContainerd(b, harness.Options{Env: env("hook")})
	for _, c := range []*harness.Containerd{ca, ch} {
		c.Import("default", harness.ImageConfig{Name: image})
	}
	cla, ctx := ca.Client("default")
	clh, _ := ch.Client("default")
	clients := map[*harness.Containerd]*containerd.Client{ca: cla, ch: clh}
	variants := []*variant{
		{name: "runc", c: ca, runtime: runc},
		{name: "wrapper-plain", c: ca, runtime: bin},
		{name: "wrapper-claim-attach", c: ca, runtime: bin, claim: true},
		{name: "wrapper-claim-hook", c: ch, runtime: bin, claim: true},
	}
	if other := os.Getenv("LOCKBOX_BENCH_COMPARE"); other != "" {
		variants = append(variants,
			&variant{name: "compare-plain", c: ca, runtime: other},
			&variant{name: "compare-claim-attach", c: ca, runtime: other, claim: true})
	}
	if os.Getenv("LOCKBOX_BENCH_REAL_AGENT") != "" {
		cr, _ := realAgentContainerd(b, secrets, "", nil)
		clients[cr], _ = cr.Client("default")
		variants = append(variants, &variant{name: "real-agent-claim-attach", c: cr, runtime: bin, claim: true})
	}
	run := func(v *variant, i int) time.Duration {
		cl := clients[v.c]
		opts := []oci.SpecOpts{oci.WithProcessArgs("/bin/true")}
		if v.claim {
			opts = append(opts, ocispec.WithService("bench"))
		}
		id := fmt.Sprintf("%s-%d", v.name, i)
		start := time.Now()
		out, code, err := v.c.GoRun(ctx, cl, image, id, v.runtime, opts...)
		d := time.Since(start)
		if err != nil || code != 0 {
			b.Fatalf("%s: exit %d, %v: %s", id, code, err, out)
		}
		return d
	}
	times := alternate(b, variants, run)
	names := make([]string, len(variants))
	for i, v := range variants {
		names[i] = v.name
	}
	meds := report(b, names, times)
	base := meds[0]
	b.ReportMetric(float64(meds[1])/float64(base), "plain/runc")
	b.ReportMetric(float64(meds[2])/float64(base), "claim/runc")
	b.ReportMetric(ms(meds[2]-base), "claim-added-ms")
	b.ReportMetric(float64(meds[3])/float64(meds[2]), "hook/attach")
	if held := a.Held(); len(held) != 0 {
		b.Errorf("agent still holds %d mounts after all containers were deleted", len(held))
	}
}

// realAgentContainerd starts a manager holding secrets and a service
// "bench" that references them all, a "lockbox agent" joined to it, and a
// containerd whose lockbox-runtime (and, with shimDir, whose
// containerd-shim-lockbox-v2) talks to that agent, with env added to its
// environment. It returns the containerd and the agent's pid once a
// claiming container has started there (grants reach the agent
// asynchronously).
func realAgentContainerd(b *testing.B, secrets map[string][]byte, shimDir string, env []string) (*harness.Containerd, int) {
	// A shim directory is a whole build: the manager and agent come from
	// it too (LOCKBOX_BENCH_COMPARE_BIN compares two builds' real agents).
	dir := shimDir
	if dir == "" {
		dir = harness.LockboxBin(b)
	}
	m := harness.StartManager(b, dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"service", "create", "bench"}
	for id, data := range secrets {
		if _, err := m.CLIStdin(ctx, data, "secret", "create", "secret"+id, "-"); err != nil {
			b.Fatal(err)
		}
		args = append(args, "--secret", "source=secret"+id)
	}
	if _, err := m.CLI(ctx, args...); err != nil {
		b.Fatal(err)
	}
	a := harness.StartAgent(b, dir, m)
	c := harness.StartContainerd(b, harness.Options{StateOnTmpfs: true, ShimDir: shimDir, Env: append([]string{"LOCKBOX_AGENT_SOCKET=" + a.Socket, "LOCKBOX_RUNTIME_MODE=attach"}, env...)})
	c.Import("default", harness.ImageConfig{Name: image})
	cl, nsctx := c.Client("default")
	n := 0
	a.WaitUntil(b, "the bench service's grants", func() error {
		n++
		out, code, err := c.GoRun(nsctx, cl, image, fmt.Sprintf("grants-%d", n), filepath.Join(dir, "lockbox-runtime"),
			oci.WithProcessArgs("/bin/true"), ocispec.WithService("bench"))
		if err == nil && code != 0 {
			err = fmt.Errorf("exit %d: %s", code, out)
		}
		return err
	})
	return c, a.Pid()
}

func median(d []time.Duration) time.Duration { return pct(d, 0.5) }

func pct(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return s[int(p*float64(len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkWrapperExec is the wrapper's own cost on a call it passes
// through: "lockbox-runtime state <id>" (parse, find runc, execve runc) vs
// "runc state <id>", alternating. The claim check on create adds one
// config.json read (BenchmarkReadClaim in plugin/runtime).
// LOCKBOX_BENCH_COMPARE=PATH adds another lockbox-runtime build to the
// rotation.
func BenchmarkWrapperExec(b *testing.B) {
	bin := runtimeBinary(b)
	runc, err := exec.LookPath("runc")
	if err != nil {
		b.Fatalf("runc not found: run make deps: %v", err)
	}
	root := b.TempDir()
	paths := []string{runc, bin}
	if other := os.Getenv("LOCKBOX_BENCH_COMPARE"); other != "" {
		paths = append(paths, other)
	}
	times := make([][]time.Duration, len(paths))
	run := func(path string) time.Duration {
		start := time.Now()
		// A missing container: runc answers fast and exits 1.
		exec.Command(path, "--root", root, "state", "nonexistent").Run()
		return time.Since(start)
	}
	for _, p := range paths {
		run(p)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range paths {
			j := (i + k) % len(paths)
			times[j] = append(times[j], run(paths[j]))
		}
	}
	b.StopTimer()
	d, w := median(times[0]), median(times[1])
	line := fmt.Sprintf("n=%d: runc median %.3fms, lockbox-runtime median %.3fms, added %+.3fms", b.N, ms(d), ms(w), ms(w-d))
	if len(paths) > 2 {
		c := median(times[2])
		line += fmt.Sprintf("; %s median %.3fms, added %+.3fms", paths[2], ms(c), ms(c-d))
		b.ReportMetric(ms(c-d), "compare-added-ms")
	}
	// Printed, not logged, with the machine (as report does).
	fmt.Printf("%s: %s, %s\n", b.Name(), line, benchinfo.Machine())
	b.ReportMetric(ms(w-d), "added-ms")
	b.ReportMetric(float64(w)/float64(d), "wrapped/runc")
}
