//go:build linux

package linux

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
	"github.com/lockbox-project/lockbox/mounter"
)

// BenchmarkAttach times the attach of a built plan into a fresh root
// (handover clones, mountpoints made, mounts moved in), in a private mount
// namespace so nothing reaches the host: the part of a container's start
// that grows with the number of single-file mounts (one per target since
// issue 12's layout; one for all of /run/secrets before).
func BenchmarkAttach(b *testing.B) {
	for _, c := range benchCases[:3] {
		b.Run(fmt.Sprintf("%dx%dB", c.n, c.size), func(b *testing.B) {
			privateMountNS(b)
			plan, src := benchPlan(b, c.n, c.size)
			m, err := New().BuildTmpfs(context.Background(), plan, src)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Wipe()
			// The roots live in a tmpfs, as /run does in containerd's
			// default spec: the disk's cost of creating a mountpoint is
			// not the mounter's.
			base := b.TempDir()
			if err := unix.Mount("tmpfs", base, "tmpfs", 0, ""); err != nil {
				b.Fatal(err)
			}
			defer unix.Unmount(base, unix.MNT_DETACH)
			for i := 0; b.Loop(); i++ {
				root := filepath.Join(base, fmt.Sprint(i))
				if err := os.Mkdir(root, 0o755); err != nil {
					b.Fatal(err)
				}
				hs, err := m.Handover(mounter.Container{})
				if err != nil {
					b.Fatal(err)
				}
				err = AttachHandovers(root, hs)
				closeHandovers(hs)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				// Take the mounts down again, deepest first.
				for _, t := range []string{"run/secrets"} {
					unix.Unmount(filepath.Join(root, t), unix.MNT_DETACH)
				}
				for _, f := range plan.Files {
					unix.Unmount(filepath.Join(root, f.Target), unix.MNT_DETACH)
				}
				b.StartTimer()
			}
			benchinfo.Print(b)
		})
	}
}
