//go:build linux

package linux

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/api/claim"
	"github.com/lockbox-project/lockbox/mounter"
)

// memSource is a SecretSource over a map, counting calls.
type memSource map[string][]byte

func (s memSource) WithSecret(id string, fn func([]byte) error) error {
	d, ok := s[id]
	if !ok {
		return fmt.Errorf("no secret %s", id)
	}
	return fn(d)
}

// secretData returns n bytes unique to name, so a test can tell files apart
// and find them in memory.
func secretData(name string, n int) []byte {
	b := bytes.Repeat([]byte(name+"-"), n/(len(name)+1)+1)
	return b[:n]
}

// build makes a plan from grants (filling Size from src) and builds it.
func build(t testing.TB, grants []mounter.Grant, src memSource) (*mounter.Plan, *Mount) {
	t.Helper()
	return buildWith(t, grants, src, "")
}

// buildWith is build with a Mounter whose MountpointSource is mp.
func buildWith(t testing.TB, grants []mounter.Grant, src memSource, mp string) (*mounter.Plan, *Mount) {
	t.Helper()
	for i := range grants {
		grants[i].Size = int64(len(src[grants[i].SecretID]))
	}
	plan, err := mounter.NewPlan(mounter.Linux, grants)
	if err != nil {
		t.Fatalf("NewPlan: %v", err)
	}
	m, err := (&Mounter{MountpointSource: mp}).BuildTmpfs(context.Background(), plan, src)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Cleanup(func() { m.Wipe() })
	return plan, m
}

// mountID returns the kernel's mount ID of the mount fd refers to.
func mountID(t testing.TB, fd int) uint64 {
	t.Helper()
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err != nil {
		t.Fatalf("statx: %v", err)
	}
	return stx.Mnt_id
}

// mountinfoHas reports whether mountinfo (a /proc/<pid>/mountinfo) lists
// the mount ID, or a line containing substr when substr is not empty.
func mountinfoHas(t testing.TB, mountinfo string, id uint64, substr string) bool {
	t.Helper()
	f, err := os.Open(mountinfo)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if id != 0 && strings.HasPrefix(line, strconv.FormatUint(id, 10)+" ") {
			return true
		}
		if substr != "" && strings.Contains(line, substr) {
			return true
		}
	}
	return false
}

// shmemKiB reads Shmem from /proc/meminfo: tmpfs pages are counted there.
func shmemKiB(t testing.TB) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Shmem:"); ok {
			v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatal("no Shmem in /proc/meminfo")
	return 0
}

// openFDs lists this process's open fds with what they point to.
func openFDs(t testing.TB) map[string]string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	fds := map[string]string{}
	for _, e := range entries {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fds[e.Name()] = target
	}
	return fds
}

func md5sum(b []byte) string { return fmt.Sprintf("%x", md5.Sum(b)) }

func itoa(i int) string { return strconv.Itoa(i) }

func ownerOf(fi os.FileInfo) (uint32, uint32) {
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

// kernelAtLeast reports whether the running kernel is at least major.minor.
func kernelAtLeast(t testing.TB, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var maj, mnr int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &maj, &mnr); err != nil {
		t.Fatal(err)
	}
	return maj > major || maj == major && mnr >= minor
}

// busyboxTmpfs is a writable tmpfs mount for a container's spec.
func busyboxTmpfs(dest string) specs.Mount {
	return specs.Mount{Destination: dest, Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "noexec", "size=64k"}}
}

// testMountpointSource makes an agent's mountpoint file of the test's own
// (EnsureMountpointSource) in a directory as open as /run.
func testMountpointSource(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "mountpoint")
	if err := EnsureMountpointSource(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// mountpointMounts are the spec mounts an adapter adds for targets
// (claim.MountpointMounts), with mp as the source.
func mountpointMounts(mp string, targets ...string) []specs.Mount {
	var ms []specs.Mount
	for _, m := range claim.MountpointMounts(targets) {
		ms = append(ms, specs.Mount{Destination: m.Destination, Type: m.Type, Source: mp, Options: m.Options})
	}
	return ms
}
