//go:build linux

package linux

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
	"github.com/lockbox-project/lockbox/mounter"
)

// The benchmarks compare the mounter with Docker's sequence for secrets
// (moby daemon/container_operations_unix.go): mount a tmpfs on a directory,
// write the files, chown and chmod them, remount read-only; on stop, unmount.
// Each iteration runs both, alternating which goes first, and the benchmark
// reports per-side p50 and p99 and their ratios (lockbox / docker), so that
// the comparison holds under the machine's noise. ns/op is the sum of both.

var benchCases = []struct {
	n, size int
}{
	{1, 4096}, {10, 4096}, {50, 4096}, {10, mounter.MaxSecretSize - 1},
}

func benchPlan(b *testing.B, n, size int) (*mounter.Plan, memSource) {
	src := memSource{}
	var grants []mounter.Grant
	for i := range n {
		id := fmt.Sprintf("bench%03d", i)
		src[id] = secretData(id, size)
		grants = append(grants, mounter.Grant{SecretID: id, SecretName: id, UID: "1000", GID: "1000", Mode: 0o400, Size: int64(size)})
	}
	plan, err := mounter.NewPlan(mounter.Linux, grants)
	if err != nil {
		b.Fatal(err)
	}
	return plan, src
}

// privateMountNS moves the calling goroutine's thread into a new mount
// namespace with private propagation, so that the Docker baseline's mounts
// never show on the host. The thread stays locked; it ends with the
// benchmark's goroutine. (It is never the main thread: init locks that one
// to the main goroutine.)
func privateMountNS(b *testing.B) {
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
		b.Fatal(err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		b.Fatal(err)
	}
}

// dockerSetup is the baseline's setup: the same files, owners and modes.
func dockerSetup(dir string, plan *mounter.Plan, src memSource) error {
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, "mode=0700,size="+strconv.FormatInt(tmpfsSize(plan.Files), 10)); err != nil {
		return err
	}
	for _, f := range plan.Files {
		p := filepath.Join(dir, f.Name)
		if err := os.WriteFile(p, src[f.SecretID], 0o600); err != nil {
			return err
		}
		if err := os.Chown(p, int(f.UID), int(f.GID)); err != nil {
			return err
		}
		if err := os.Chmod(p, f.Mode); err != nil {
			return err
		}
	}
	return unix.Mount("", dir, "", flags|unix.MS_REMOUNT|unix.MS_RDONLY, "")
}

type samples struct{ lockbox, docker []time.Duration }

func (s *samples) report(b *testing.B) {
	slices.Sort(s.lockbox)
	slices.Sort(s.docker)
	q := func(d []time.Duration, p float64) float64 {
		return float64(d[int(p*float64(len(d)-1))].Nanoseconds()) / 1e3
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"p50", 0.5}, {"p99", 0.99}} {
		l, d := q(s.lockbox, p.v), q(s.docker, p.v)
		b.ReportMetric(l, "lockbox-"+p.name+"-µs")
		b.ReportMetric(d, "docker-"+p.name+"-µs")
		b.ReportMetric(l/d, "ratio-"+p.name)
	}
	benchinfo.Print(b)
}

// BenchmarkSetup times Build (a detached tmpfs, written and made read-only;
// attach is separate) against Docker's mount, write, chown, remount ro.
func BenchmarkSetup(b *testing.B) {
	for _, c := range benchCases {
		b.Run(fmt.Sprintf("%dx%dB", c.n, c.size), func(b *testing.B) {
			privateMountNS(b)
			plan, src := benchPlan(b, c.n, c.size)
			dir := b.TempDir()
			mnt := New()
			var s samples
			ctx := context.Background()
			for i := 0; b.Loop(); i++ {
				lockbox := func() {
					start := time.Now()
					m, err := mnt.BuildTmpfs(ctx, plan, src)
					s.lockbox = append(s.lockbox, time.Since(start))
					if err != nil {
						b.Fatal(err)
					}
					m.Wipe()
				}
				docker := func() {
					start := time.Now()
					err := dockerSetup(dir, plan, src)
					s.docker = append(s.docker, time.Since(start))
					if err != nil {
						b.Fatal(err)
					}
					if err := unix.Unmount(dir, 0); err != nil {
						b.Fatal(err)
					}
				}
				if i%2 == 0 {
					lockbox()
					docker()
				} else {
					docker()
					lockbox()
				}
			}
			s.report(b)
		})
	}
}

// BenchmarkWipe times Wipe (overwrite, truncate, close: the tmpfs is freed)
// against Docker's unmount, which frees the pages without overwriting them.
func BenchmarkWipe(b *testing.B) {
	for _, c := range benchCases {
		b.Run(fmt.Sprintf("%dx%dB", c.n, c.size), func(b *testing.B) {
			privateMountNS(b)
			plan, src := benchPlan(b, c.n, c.size)
			dir := b.TempDir()
			mnt := New()
			var s samples
			ctx := context.Background()
			for i := 0; b.Loop(); i++ {
				lockbox := func() {
					m, err := mnt.BuildTmpfs(ctx, plan, src)
					if err != nil {
						b.Fatal(err)
					}
					start := time.Now()
					err = m.Wipe()
					s.lockbox = append(s.lockbox, time.Since(start))
					if err != nil {
						b.Fatal(err)
					}
				}
				docker := func() {
					if err := dockerSetup(dir, plan, src); err != nil {
						b.Fatal(err)
					}
					start := time.Now()
					err := unix.Unmount(dir, 0)
					s.docker = append(s.docker, time.Since(start))
					if err != nil {
						b.Fatal(err)
					}
				}
				if i%2 == 0 {
					lockbox()
					docker()
				} else {
					docker()
					lockbox()
				}
			}
			s.report(b)
		})
	}
}
