//go:build linux

package linux

import (
	"context"
	"fmt"
	"testing"

	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/mounter"
)

// BenchmarkUpdate times one container's live update of one 4 KiB file
// (Mount.Update: stage the new file, clone it, enter the container's mount
// namespace by pid, mount beneath, detach the old): the per-container cost
// of a rotation on a node. Baseline in the same run: BenchmarkUpdate/attach,
// an Attach by pid of a one-file mount into the same container (what a
// container start pays for the same file).
func BenchmarkUpdate(b *testing.B) {
	src := memSource{"id-a": secretData("a", 4096), "id-b": secretData("b", 4096)}
	grants := func(id string) []mounter.Grant { return []mounter.Grant{{SecretID: id, SecretName: "s"}} }
	r := busybox.NewRunc(b)
	bundle, err := busybox.NewBundle(b.TempDir(), busybox.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := busybox.Context(b)
	if err := r.Run(ctx, "bench-update", bundle); err != nil {
		b.Fatal(err)
	}
	pid, err := r.Pid(ctx, "bench-update")
	if err != nil {
		b.Fatal(err)
	}
	c := mounter.Container{ID: "bench-update", Pid: pid}
	b.Run("update", func(b *testing.B) {
		_, m := build(b, grants("id-a"), src)
		if err := m.Attach(context.Background(), c); err != nil {
			b.Fatal(err)
		}
		plans := []*mounter.Plan{nextPlan(b, grants("id-b"), src), nextPlan(b, grants("id-a"), src)}
		for i := 0; b.Loop(); i++ {
			if _, err := m.Update(context.Background(), c, plans[i%2], src); err != nil {
				b.Fatal(err)
			}
		}
		benchinfo.Print(b)
	})
	b.Run("attach", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			b.StopTimer()
			g := []mounter.Grant{{SecretID: "id-a", SecretName: "s", Target: fmt.Sprintf("/tmp/attach/%d", i)}}
			_, m := build(b, g, src)
			b.StartTimer()
			if err := m.Attach(context.Background(), c); err != nil {
				b.Fatal(err)
			}
		}
		benchinfo.Print(b)
	})
}
