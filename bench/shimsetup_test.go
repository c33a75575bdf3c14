//go:build linux

package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/plugin/ocispec"
)

// shimVariant is one variant of the shim benchmarks: a runtime type on a
// containerd, claiming the bench service or not.
type shimVariant struct {
	name, runtime string
	claim         bool
	// binds are mounts added to the spec (hostSecretBinds).
	binds []specs.Mount
	c     *harness.Containerd
	cl    *containerd.Client
	ctx   context.Context
	img   containerd.Image
	// agentPid is the real agent's process when the variant's claims go
	// to one (0: the in-process test agent, or no claim).
	agentPid int
}

// shimVariants starts the in-process test agent and a containerd whose
// shims talk to it (env is added to containerd's environment), and returns
// the shim benchmarks' variants: runc-shim (the baseline),
// lockbox-shim-plain and lockbox-shim-claim; with LOCKBOX_BENCH_REAL_AGENT
// set, also real-agent-runc-shim, real-agent-shim-claim and
// real-agent-shim-plain: the runc shim, the same claim and a plain
// container of the Lockbox shim through a second containerd whose shims
// talk to a real manager and "lockbox agent" (its own process, its records
// and exit watch), as on a node; the test agent
// runs in the benchmark's process, beside the client, and keeps no
// records. LOCKBOX_BENCH_COMPARE_BIN=DIR adds compare-shim-claim (and,
// with the real agent, compare-real-shim-claim): the same claims through
// DIR's build, each on a containerd of its own. LOCKBOX_BENCH_BINDS adds
// runc-shim-binds and runc-shim-bind-dir (hostSecretBinds). It also returns the test
// agent, whose mounts must all be released at the end.
func shimVariants(b *testing.B, env ...string) ([]*shimVariant, *harness.TestAgent) {
	build := os.Getenv("LOCKBOX_BIN")
	if build == "" {
		b.Fatal("LOCKBOX_BIN is not set: run make build and point it at bin/")
	}
	if _, err := os.Stat(filepath.Join(build, "containerd-shim-lockbox-v2")); err != nil {
		b.Fatalf("%v (make build)", err)
	}
	dir := freshCopies(b, build)
	grants, secrets := tenSecrets()
	a := harness.StartTestAgent(b, grants, secrets)
	c := harness.StartContainerd(b, harness.Options{StateOnTmpfs: true, ShimDir: dir, Env: append([]string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}, env...)})
	c.Import("default", harness.ImageConfig{Name: image})
	on := func(c *harness.Containerd, vs ...*shimVariant) []*shimVariant {
		cl, ctx := c.Client("default")
		img, err := cl.GetImage(ctx, image)
		if err != nil {
			b.Fatal(err)
		}
		for _, v := range vs {
			v.c, v.cl, v.ctx, v.img = c, cl, ctx, img
		}
		return vs
	}
	variants := on(c,
		&shimVariant{name: "runc-shim", runtime: runcShim},
		&shimVariant{name: "lockbox-shim-plain", runtime: lockboxShim},
		&shimVariant{name: "lockbox-shim-claim", runtime: lockboxShim, claim: true})
	if os.Getenv("LOCKBOX_BENCH_REAL_AGENT") != "" {
		cr, agent := realAgentContainerd(b, secrets, dir, env)
		// Its own runc baseline: a second containerd is another process
		// with its own state, and the claim is compared with what a plain
		// runc container costs on that one.
		variants = append(variants, on(cr,
			&shimVariant{name: "real-agent-runc-shim", runtime: runcShim},
			&shimVariant{name: "real-agent-shim-claim", runtime: lockboxShim, claim: true, agentPid: agent},
			&shimVariant{name: "real-agent-shim-plain", runtime: lockboxShim})...)
	}
	if os.Getenv("LOCKBOX_BENCH_CHILD_AGENT") != "" {
		// The same test agent in a process of its own, on a containerd
		// of its own with its own runc baseline.
		cc := harness.StartContainerd(b, harness.Options{StateOnTmpfs: true, ShimDir: dir, Env: append([]string{"LOCKBOX_AGENT_SOCKET=" + startChildAgent(b)}, env...)})
		cc.Import("default", harness.ImageConfig{Name: image})
		variants = append(variants, on(cc,
			&shimVariant{name: "child-agent-runc-shim", runtime: runcShim},
			&shimVariant{name: "child-agent-shim-claim", runtime: lockboxShim, claim: true})...)
	}
	if cmp := os.Getenv("LOCKBOX_BENCH_COMPARE_BIN"); cmp != "" {
		cmp = freshCopies(b, cmp)
		// Another build's shim (and, with the real agent, its manager and
		// agent) in the same alternation: before and after under the same
		// load, which runs one after the other on a shared machine are not.
		// Its shim runs by its path on the first containerd, beside this
		// build's: one containerd's state for both.
		variants = append(variants, on(c, &shimVariant{name: "compare-shim-claim", runtime: filepath.Join(cmp, "containerd-shim-lockbox-v2"), claim: true})...)
		if os.Getenv("LOCKBOX_BENCH_REAL_AGENT") != "" {
			cr, agent := realAgentContainerd(b, secrets, cmp, env)
			variants = append(variants, on(cr, &shimVariant{name: "compare-real-shim-claim", runtime: lockboxShim, claim: true, agentPid: agent})...)
		}
	}
	if extra := os.Getenv("LOCKBOX_BENCH_SHIMS"); extra != "" {
		// Other shim binaries, each run by its path on the first
		// containerd: builds compared in one alternation. A name ending in
		// "-claim" claims the bench service; the others claim nothing.
		for _, kv := range strings.Split(extra, ",") {
			name, path, ok := strings.Cut(kv, "=")
			if !ok || !filepath.IsAbs(path) {
				b.Fatalf("LOCKBOX_BENCH_SHIMS: %q is not NAME=/ABSOLUTE/PATH", kv)
			}
			d := freshCopies(b, filepath.Dir(path), filepath.Base(path))
			variants = append(variants, on(c, &shimVariant{name: name, runtime: filepath.Join(d, filepath.Base(path)), claim: strings.HasSuffix(name, "-claim")})...)
		}
	}
	if os.Getenv("LOCKBOX_BENCH_BINDS") != "" {
		// The same ten secrets mounted by runc itself from a tmpfs on the
		// host, with no agent: one bind per file, as Docker lays out a
		// service's secrets, and one bind of a directory holding all ten.
		// What the kernel's and runc's part of a claim's mounts costs,
		// whoever makes them.
		files, dir := hostSecretBinds(b)
		variants = append(variants, on(c,
			&shimVariant{name: "runc-shim-binds", runtime: runcShim, binds: files},
			&shimVariant{name: "runc-shim-bind-dir", runtime: runcShim, binds: dir})...)
	}
	if os.Getenv("LOCKBOX_BENCH_CONTROL") != "" {
		// containerd's runc shim again, another fresh copy run by its
		// path: what two copies of one binary differ by in this run, the
		// resolution the other variants' differences are read against.
		// Last, after every variant the metrics index.
		ctl := freshCopies(b, dir, runcShimBinary)
		variants = append(variants, on(c, &shimVariant{name: "runc-shim-copy", runtime: filepath.Join(ctl, runcShimBinary)})...)
	}
	return variants, a
}

// run runs the variant's container i through its lifecycle and returns
// its duration; mark is lifecycle's.
func (v *shimVariant) run(b *testing.B, i int, mark func(string)) time.Duration {
	opts := []oci.SpecOpts{oci.WithImageConfig(v.img), oci.WithProcessArgs("/bin/true")}
	if v.claim {
		opts = append(opts, ocispec.WithService("bench"))
	}
	if len(v.binds) != 0 {
		opts = append(opts, oci.WithMounts(v.binds))
	}
	id := fmt.Sprintf("%s-%d", v.name, i)
	start := time.Now()
	// runc's state in the containerd's own tmpfs, beside its bundles, as
	// /run/containerd/runc is on a node.
	code, out, err := lifecycle(v.ctx, v.cl, v.c.FifoDir, v.img, id, v.runtime, &options.Options{Root: v.c.RuncRoot}, opts, mark)
	d := time.Since(start)
	if err != nil || code != 0 {
		b.Fatalf("%s: exit %d, %v: %s", id, code, err, out)
	}
	return d
}

func variantNames(vs []*shimVariant) []string {
	names := make([]string, len(vs))
	for i, v := range vs {
		names[i] = v.name
	}
	return names
}

// hostSecretBinds writes ten 4 KiB files into a tmpfs of its own, twice,
// and returns the spec mounts that bind them read-only at
// /run/secrets/s0..s9 one file at a time, and the one mount that binds a
// directory of the same ten at /run/secrets.
func hostSecretBinds(b *testing.B) (files, dir []specs.Mount) {
	d := b.TempDir()
	if err := unix.Mount("tmpfs", d, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=1m,mode=0700"); err != nil {
		b.Fatalf("a tmpfs for the host's secret files: %v", err)
	}
	b.Cleanup(func() { unix.Unmount(d, unix.MNT_DETACH) })
	opts := []string{"rbind", "ro", "nosuid", "nodev", "noexec"}
	if err := os.Mkdir(filepath.Join(d, "dir"), 0o755); err != nil {
		b.Fatal(err)
	}
	_, secrets := tenSecrets()
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("s%d", i)
		for _, f := range []string{filepath.Join(d, name), filepath.Join(d, "dir", name)} {
			if err := os.WriteFile(f, secrets[name], 0o444); err != nil {
				b.Fatal(err)
			}
		}
		files = append(files, specs.Mount{Type: "bind", Source: filepath.Join(d, name), Destination: "/run/secrets/" + name, Options: opts})
	}
	dir = []specs.Mount{{Type: "bind", Source: filepath.Join(d, "dir"), Destination: "/run/secrets", Options: opts}}
	return files, dir
}

// realRunc is the index of real-agent-runc-shim among shimVariants' variants
// (real-agent-shim-claim and real-agent-shim-plain follow it), when
// LOCKBOX_BENCH_REAL_AGENT is set.
const realRunc = 3

// hasRealAgent reports whether variants hold the real agent's three at
// realRunc.
func hasRealAgent(variants []*shimVariant) bool {
	return len(variants) > realRunc+2 && variants[realRunc].name == "real-agent-runc-shim"
}

// runcShimBinary is the file containerd runs for io.containerd.runc.v2.
const runcShimBinary = "containerd-shim-runc-v2"

// freshCopies copies the named files of dir into a new directory, each
// written anew, and returns that directory. With no name it copies every
// regular file of dir (a build's bin/) and its node build (node/lockbox),
// and containerd's runc shim from the tools unless dir has one: the shims
// that directory's containerd runs.
// A shim binary is executed three times per container, and where its
// pages stand in the page cache shows in the lifecycle: on the project's
// machine (whose host pages out file pages no process has mapped for a
// minute, a DAMON pageout scheme) the baseline installed hours before ran
// 1.5 ms slower than a copy of it made minutes before, in two runs, and
// 0.7 ms faster once it was itself copied anew. Copies written at the
// start of the run compare like with like.
func freshCopies(b *testing.B, dir string, names ...string) string {
	b.Helper()
	whole := len(names) == 0
	if whole {
		ents, err := os.ReadDir(dir)
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range ents {
			if e.Type().IsRegular() {
				names = append(names, e.Name())
			}
		}
	}
	srcs := map[string]string{}
	for _, n := range names {
		srcs[n] = filepath.Join(dir, n)
	}
	out := b.TempDir()
	if whole {
		if _, ok := srcs[runcShimBinary]; !ok {
			srcs[runcShimBinary] = filepath.Join(harness.ToolsDir(), runcShimBinary)
		}
		// The node build, which the harness runs as the agent
		// (harness.AgentBinary), where the build has one.
		node := filepath.Join("node", "lockbox")
		if _, err := os.Stat(filepath.Join(dir, node)); err == nil {
			if err := os.Mkdir(filepath.Join(out, "node"), 0o755); err != nil {
				b.Fatal(err)
			}
			srcs[node] = filepath.Join(dir, node)
		}
	}
	for n, src := range srcs {
		if err := copyExecutable(src, filepath.Join(out, n)); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
