//go:build linux

package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/plugin/ocispec"
)

// shimVariant is one variant of the shim benchmarks: a runtime type on a
// containerd, claiming the bench service or not.
type shimVariant struct {
	name, runtime string
	claim         bool
	c             *harness.Containerd
	cl            *containerd.Client
	ctx           context.Context
	img           containerd.Image
}

// shimVariants starts the in-process test agent and a containerd whose
// shims talk to it (env is added to containerd's environment), and returns
// the shim benchmarks' variants: runc-shim (the baseline),
// lockbox-shim-plain and lockbox-shim-claim; with LOCKBOX_BENCH_REAL_AGENT
// set, also real-agent-runc-shim and real-agent-shim-claim: the runc
// shim and the same claim through a second containerd whose shims talk to
// a real manager and "lockbox agent" (its own process, its records and
// exit watch), as on a node; the test agent
// runs in the benchmark's process, beside the client, and keeps no
// records. LOCKBOX_BENCH_COMPARE_BIN=DIR adds compare-shim-claim (and,
// with the real agent, compare-real-shim-claim): the same claims through
// DIR's build, each on a containerd of its own. It also returns the test
// agent, whose mounts must all be released at the end.
func shimVariants(b *testing.B, env ...string) ([]*shimVariant, *harness.TestAgent) {
	dir := os.Getenv("LOCKBOX_BIN")
	if dir == "" {
		b.Fatal("LOCKBOX_BIN is not set: run make build and point it at bin/")
	}
	if _, err := os.Stat(filepath.Join(dir, "containerd-shim-lockbox-v2")); err != nil {
		b.Fatalf("%v (make build)", err)
	}
	grants, secrets := tenSecrets()
	a := harness.StartTestAgent(b, grants, secrets)
	c := harness.StartContainerd(b, harness.Options{ShimDir: dir, Env: append([]string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}, env...)})
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
		cr := realAgentContainerd(b, secrets, dir, env)
		// Its own runc baseline: a second containerd is another process
		// with its own state, and the claim is compared with what a plain
		// runc container costs on that one.
		variants = append(variants, on(cr,
			&shimVariant{name: "real-agent-runc-shim", runtime: runcShim},
			&shimVariant{name: "real-agent-shim-claim", runtime: lockboxShim, claim: true})...)
	}
	if os.Getenv("LOCKBOX_BENCH_CHILD_AGENT") != "" {
		// The same test agent in a process of its own, on a containerd
		// of its own with its own runc baseline.
		cc := harness.StartContainerd(b, harness.Options{ShimDir: dir, Env: append([]string{"LOCKBOX_AGENT_SOCKET=" + startChildAgent(b)}, env...)})
		cc.Import("default", harness.ImageConfig{Name: image})
		variants = append(variants, on(cc,
			&shimVariant{name: "child-agent-runc-shim", runtime: runcShim},
			&shimVariant{name: "child-agent-shim-claim", runtime: lockboxShim, claim: true})...)
	}
	if cmp := os.Getenv("LOCKBOX_BENCH_COMPARE_BIN"); cmp != "" {
		// Another build's shim (and, with the real agent, its manager and
		// agent) in the same alternation: before and after under the same
		// load, which runs one after the other on a shared machine are not.
		cc := harness.StartContainerd(b, harness.Options{ShimDir: cmp, Env: append([]string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}, env...)})
		cc.Import("default", harness.ImageConfig{Name: image})
		variants = append(variants, on(cc, &shimVariant{name: "compare-shim-claim", runtime: lockboxShim, claim: true})...)
		if os.Getenv("LOCKBOX_BENCH_REAL_AGENT") != "" {
			cr := realAgentContainerd(b, secrets, cmp, env)
			variants = append(variants, on(cr, &shimVariant{name: "compare-real-shim-claim", runtime: lockboxShim, claim: true})...)
		}
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
	id := fmt.Sprintf("%s-%d", v.name, i)
	start := time.Now()
	code, out, err := lifecycle(v.ctx, v.cl, v.c.FifoDir, v.img, id, v.runtime, opts, mark)
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

// realRunc is the index of real-agent-runc-shim among shimVariants' variants
// (real-agent-shim-claim follows it), when LOCKBOX_BENCH_REAL_AGENT is set.
const realRunc = 3

// hasRealAgent reports whether variants hold the real agent's pair at
// realRunc.
func hasRealAgent(variants []*shimVariant) bool {
	return len(variants) > realRunc+1 && variants[realRunc].name == "real-agent-runc-shim"
}
