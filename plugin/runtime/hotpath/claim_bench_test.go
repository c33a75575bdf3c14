package hotpath

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
)

// A containerd-sized config.json (about 8 KiB) with and without a claim:
// the non-claiming case is the cost every container pays.
func benchBundle(b *testing.B, claim bool) string {
	dir := b.TempDir()
	spec := &specs.Spec{Version: specs.Version, Root: &specs.Root{Path: "rootfs"}, Process: &specs.Process{Args: []string{"sh"}},
		Annotations: map[string]string{"io.kubernetes.cri.container-name": "app"}}
	for i := 0; i < 40; i++ {
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/some/long/path/for/mount/number", Type: "bind", Source: "/var/lib/containerd/some/long/source/path", Options: []string{"rbind", "ro", "nosuid"}})
	}
	if claim {
		spec.Annotations[ServiceAnnotation] = "web"
	}
	raw, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o600); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkReadClaim compares the wrapper's partial decode (ReadClaim,
// what lockbox-runtime runs) with a full runtime-spec decode of the same
// bundles, the baseline it replaced.
func BenchmarkReadClaim(b *testing.B) {
	for _, claim := range []bool{false, true} {
		name := "plain"
		if claim {
			name = "claiming"
		}
		b.Run(name+"/hotpath", func(b *testing.B) {
			dir := benchBundle(b, claim)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				c, err := ReadClaim(dir)
				if err != nil || (c != nil) != claim {
					b.Fatal(c, err)
				}
			}
			benchinfo.Print(b)
		})
		b.Run(name+"/full-spec", func(b *testing.B) {
			dir := benchBundle(b, claim)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
				if err != nil {
					b.Fatal(err)
				}
				var spec specs.Spec
				if err := json.Unmarshal(raw, &spec); err != nil {
					b.Fatal(err)
				}
				if _, ok := spec.Annotations[ServiceAnnotation]; ok != claim {
					b.Fatal("claim not seen")
				}
			}
			benchinfo.Print(b)
		})
	}
}
