//go:build linux

package linux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/mounter"
)

func TestBuild(t *testing.T) {
	src := memSource{
		"id-a": secretData("a", 100),
		"id-b": secretData("b", 4096),
		"id-c": secretData("c", 4097),
		"id-d": secretData("d", mounter.MaxSecretSize-1),
	}
	grants := []mounter.Grant{
		{SecretID: "id-a", SecretName: "a"},
		{SecretID: "id-b", SecretName: "b", Target: "conf/b.pem", UID: "1000", GID: "1001", Mode: 0o400},
		{SecretID: "id-c", SecretName: "c", Target: "/etc/app/c", UID: "0", GID: "1000", Mode: 0o440},
		{SecretID: "id-d", SecretName: "d", Target: "other/b.pem", Mode: 0o600},
		{SecretID: "id-a", SecretName: "a", Target: "/etc/a-again", Mode: 0o400},
	}
	plan, m := build(t, grants, src)

	// Content, owner and mode of every file by name, through the mount fd.
	for _, f := range plan.Files {
		fd, err := unix.Openat(m.fd, f.Name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("open %s: %v", f.Name, err)
		}
		file := os.NewFile(uintptr(fd), f.Name)
		got, err := io.ReadAll(file)
		file.Close()
		if err != nil || string(got) != string(src[f.SecretID]) {
			t.Errorf("%s: content differs (%d bytes, err %v)", f.Name, len(got), err)
		}
		var st unix.Stat_t
		if err := unix.Fstatat(m.fd, f.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
		if st.Uid != f.UID || st.Gid != f.GID || st.Mode != unix.S_IFREG|uint32(f.Mode) {
			t.Errorf("%s: %d:%d %o, want %d:%d %o", f.Name, st.Uid, st.Gid, st.Mode, f.UID, f.GID, unix.S_IFREG|uint32(f.Mode))
		}
		// Every file carries the mark Recover looks for.
		rfd, err := unix.Openat(m.fd, f.Name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !hasMark(rfd, m.mark) {
			t.Errorf("%s: no mark", f.Name)
		}
		unix.Close(rfd)
	}
	// Flat: one file per plan file, nothing else (no directory, no link).
	names, err := readDirAt(m.fd, ".")
	slices.Sort(names)
	if err != nil || strings.Join(names, ",") != "id-a,id-a~2,id-b,id-c,id-d" {
		t.Errorf("the tmpfs holds %v (%v), want one file per plan file", names, err)
	}

	// Read-only: nothing can be created or written through the mount.
	if _, err := unix.Openat(m.fd, "new", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o600); !errors.Is(err, unix.EROFS) {
		t.Errorf("create on the mount: %v, want EROFS", err)
	}
	if _, err := unix.Openat(m.fd, plan.Files[0].Name, unix.O_WRONLY|unix.O_CLOEXEC, 0); !errors.Is(err, unix.EROFS) {
		t.Errorf("write on the mount: %v, want EROFS", err)
	}

	// Detached: the host's mount table never lists it.
	if id := mountID(t, m.fd); mountinfoHas(t, "/proc/self/mountinfo", id, "") {
		t.Errorf("mount %d is in the host's mountinfo", id)
	}

	// Mount flags and tmpfs options.
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(m.fd, &sfs); err != nil {
		t.Fatal(err)
	}
	want := int64(unix.ST_RDONLY | unix.ST_NOSUID | unix.ST_NODEV | unix.ST_NOEXEC)
	if sfs.Flags&want != want {
		t.Errorf("flags %#x, want %#x set", sfs.Flags, want)
	}
	if sfs.Type != unix.TMPFS_MAGIC {
		t.Errorf("fs type %#x, want tmpfs", sfs.Type)
	}
	// The size cap is just above the payload: the sum of page-rounded files
	// plus one page.
	if got, wantSize := int64(sfs.Blocks)*sfs.Bsize, tmpfsSize(plan.Files); got != wantSize {
		t.Errorf("tmpfs size %d, want %d", got, wantSize)
	}
}

func readDirAt(dirfd int, name string) ([]string, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	return f.Readdirnames(-1)
}

func TestBuildRefuses(t *testing.T) {
	ctx := context.Background()
	plan := &mounter.Plan{OS: mounter.Linux, Files: []mounter.File{
		{SecretID: "x", SecretName: "x", Name: "x", Target: "/run/secrets/x", Mode: 0o444, Size: 5},
	}, Size: 5}
	before := openFDs(t)
	tests := []struct {
		name string
		plan *mounter.Plan
		src  memSource
		want string
	}{
		{"windows plan", &mounter.Plan{OS: mounter.Windows}, nil, "not a linux plan"},
		{"nil plan", nil, nil, "not a linux plan"},
		{"length differs from plan", plan, memSource{"x": []byte("toolong")}, "holds 7 bytes, the plan says 5"},
		{"missing secret", plan, memSource{}, "no secret x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New().Build(ctx, tt.plan, tt.src)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Build = %v, %v; want error containing %q", m, err, tt.want)
			}
		})
	}
	if after := openFDs(t); len(after) != len(before) {
		t.Errorf("fds leaked by failed builds: before %v, after %v", before, after)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := New().Build(cancelled, plan, memSource{"x": []byte("12345")}); !errors.Is(err, context.Canceled) {
		t.Errorf("Build with a cancelled context: %v", err)
	}
}

func TestBuildEmptyPlan(t *testing.T) {
	plan, err := mounter.NewPlan(mounter.Linux, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New().BuildTmpfs(context.Background(), plan, memSource{})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := m.Handover(mounter.Container{})
	if err != nil || len(hs) != 0 {
		t.Errorf("Handover of an empty plan: %v, %v", hs, err)
	}
	if err := m.Attach(context.Background(), mounter.Container{Rootfs: t.TempDir()}); err != nil {
		t.Errorf("Attach of an empty plan: %v", err)
	}
	if err := m.Wipe(); err != nil {
		t.Error(err)
	}
}

// TestWipe checks that wiping returns the memory (Shmem in /proc/meminfo
// drops by about the payload), leaves no fd behind and is idempotent.
func TestWipe(t *testing.T) {
	const n, size = 100, mounter.MaxSecretSize - 1 // about 49 MiB
	src := memSource{}
	var grants []mounter.Grant
	for i := range n {
		id := fmt.Sprintf("wipe%03d", i)
		src[id] = secretData(id, size)
		grants = append(grants, mounter.Grant{SecretID: id, SecretName: id})
	}
	for i := range grants {
		grants[i].Size = size
	}
	plan, err := mounter.NewPlan(mounter.Linux, grants)
	if err != nil {
		t.Fatal(err)
	}
	fdsBefore := openFDs(t)
	base := shmemKiB(t)
	m, err := New().BuildTmpfs(context.Background(), plan, src)
	if err != nil {
		t.Fatal(err)
	}
	payloadKiB := int64(n * size / 1024)
	built := shmemKiB(t)
	if rise := built - base; rise < payloadKiB*8/10 {
		t.Fatalf("Shmem rose by %d KiB for a %d KiB payload", rise, payloadKiB)
	}
	// Keep a handle on one file through an attached-style clone, as a
	// still-running container would, to see what it sees after the wipe.
	hs, err := m.Handover(mounter.Container{})
	if err != nil {
		t.Fatal(err)
	}
	// A clone's root is the file itself: reopen it through /proc.
	held, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", hs[0].File.Fd()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	closeHandovers(hs)

	if err := m.Wipe(); err != nil {
		t.Fatalf("Wipe: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(held, &st); err != nil || st.Size != 0 {
		t.Errorf("a held file after the wipe: size %d, %v; want 0", st.Size, err)
	}
	// The tmpfs itself (still alive through the held file) has given back
	// every page: a check the rest of the machine cannot disturb.
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(held, &sfs); err != nil || sfs.Bfree != sfs.Blocks {
		t.Errorf("tmpfs after the wipe: %d of %d blocks free (%v)", sfs.Bfree, sfs.Blocks, err)
	}
	unix.Close(held)
	after := shmemKiB(t)
	if drop := built - after; drop < payloadKiB*8/10 {
		t.Errorf("Shmem dropped by %d KiB after the wipe of %d KiB (base %d, built %d, after %d)", drop, payloadKiB, base, built, after)
	}
	t.Logf("Shmem: base %d KiB, built %d KiB, wiped %d KiB (payload %d KiB)", base, built, after, payloadKiB)
	if fds := openFDs(t); len(fds) != len(fdsBefore) {
		t.Errorf("fds after the wipe: %v, before the build: %v", fds, fdsBefore)
	}
	if err := m.Wipe(); err != nil {
		t.Errorf("second Wipe: %v", err)
	}
	if _, err := m.Handover(mounter.Container{}); err == nil {
		t.Error("Handover after Wipe succeeded")
	}
}

// TestBuildShapes checks that the tmpfs's size and inode budget fit plans of
// every shape: tmpfs charges links, directories and the marks against the
// inode budget, and whole pages against the size.
func TestBuildShapes(t *testing.T) {
	shapes := []struct {
		name   string
		n      int
		size   int
		target func(i int) string
	}{
		{"flat under /run/secrets", 300, 1, func(i int) string { return "" }},
		{"deep under /run/secrets", 100, 10, func(i int) string { return fmt.Sprintf("a%d/b/c/d/e/f", i) }},
		{"outside", 100, 4097, func(i int) string { return fmt.Sprintf("/etc/x%d", i) }},
		{"page sized", 50, 4096, func(i int) string { return "" }},
		{"largest", 131, mounter.MaxSecretSize - 1, func(i int) string { return "" }},
	}
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			src := memSource{}
			var grants []mounter.Grant
			for i := range sh.n {
				id := fmt.Sprintf("s%03d", i)
				src[id] = secretData(id, sh.size)
				grants = append(grants, mounter.Grant{SecretID: id, SecretName: id, Target: sh.target(i)})
			}
			build(t, grants, src)
		})
	}
}

// TestConcurrent builds, hands over and wipes from many goroutines at once,
// with Handover and Wipe racing on the same mounts, for the race detector
// and for fd leaks.
func TestConcurrent(t *testing.T) {
	src := memSource{"a": secretData("a", 100), "b": secretData("b", 5000)}
	plan, err := mounter.NewPlan(mounter.Linux, []mounter.Grant{
		{SecretID: "a", SecretName: "a", Size: 100},
		{SecretID: "b", SecretName: "b", Target: "/etc/b", Size: 5000},
	})
	if err != nil {
		t.Fatal(err)
	}
	fds := openFDs(t)
	mnt := New()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 16 {
		wg.Go(func() {
			for range 20 {
				m, err := mnt.BuildTmpfs(context.Background(), plan, src)
				if err != nil {
					errs <- err
					return
				}
				done := make(chan struct{})
				go func() {
					defer close(done)
					// Either a full handover or the wiped error; never
					// anything in between.
					hs, err := m.Handover(mounter.Container{})
					if err == nil {
						if len(hs) != 2 {
							errs <- fmt.Errorf("handover of %d mounts", len(hs))
						}
						closeHandovers(hs)
					} else if !strings.Contains(err.Error(), "wiped") {
						errs <- err
					}
				}()
				if err := m.Wipe(); err != nil {
					errs <- err
				}
				<-done
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := openFDs(t); len(got) != len(fds) {
		t.Errorf("%d fds open after, %d before", len(got), len(fds))
	}
}

// TestZeroFill checks the overwrite step of the wipe alone, on a real tmpfs
// file: every byte reads zero afterwards, size unchanged, before the
// truncation frees the pages.
func TestZeroFill(t *testing.T) {
	for _, size := range []int{1, 4096, 4097, len(zeros), len(zeros) + 1, mounter.MaxSecretSize - 1} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			src := memSource{"a": secretData("a", size)}
			_, m := build(t, []mounter.Grant{{SecretID: "a", SecretName: "a", Target: "/etc/a"}}, src)
			if err := m.setWritable(true); err != nil {
				t.Fatal(err)
			}
			fd, err := unix.Openat(m.fd, "a", unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			f := os.NewFile(uintptr(fd), "a")
			defer f.Close()
			if err := zeroFill(fd, int64(size)); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<20))
			if err != nil || len(got) != size || strings.Trim(string(got), "\x00") != "" {
				t.Errorf("after zeroFill: %d bytes, %v, not all zero", len(got), err)
			}
		})
	}
}

// mountOptionsIn attaches m's handovers under a fresh rootfs in a private
// mount namespace (a throwaway locked thread) and returns the mountinfo
// lines of the mounts made there.
func mountOptionsIn(t *testing.T, m *Mount) []string {
	t.Helper()
	root := t.TempDir()
	type result struct {
		lines []string
		err   error
	}
	var r result
	_ = onThrowawayThread(func() error {
		r.err = func() error {
			if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
				return err
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return err
			}
			hs, err := m.Handover(mounter.Container{})
			if err != nil {
				return err
			}
			defer closeHandovers(hs)
			return AttachHandovers(root, hs)
		}()
		if r.err != nil {
			return nil
		}
		var data []byte
		data, r.err = os.ReadFile("/proc/thread-self/mountinfo")
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, root) {
				r.lines = append(r.lines, l)
			}
		}
		return nil
	})
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.lines
}

func TestNoSwap(t *testing.T) {
	src := memSource{"a": secretData("a", 10)}
	plan, err := mounter.NewPlan(mounter.Linux, []mounter.Grant{{SecretID: "a", SecretName: "a", Size: 10}})
	if err != nil {
		t.Fatal(err)
	}
	for _, unsupported := range []bool{false, true} {
		t.Run(fmt.Sprintf("unsupported=%v", unsupported), func(t *testing.T) {
			mnt := New()
			mnt.noSwapUnsupported.Store(unsupported)
			m, err := mnt.BuildTmpfs(context.Background(), plan, src)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Wipe()
			lines := mountOptionsIn(t, m)
			if len(lines) != 1 {
				t.Fatalf("mounts: %q", lines)
			}
			want := !unsupported && kernelAtLeast(t, 6, 4)
			if got := strings.HasSuffix(lines[0], ",noswap"); got != want {
				t.Errorf("noswap = %v, want %v: %s", got, want, lines[0])
			}
			if !strings.Contains(lines[0], " ro,nosuid,nodev,noexec") {
				t.Errorf("mount options: %s", lines[0])
			}
		})
	}
	if mountinfoHas(t, "/proc/self/mountinfo", 0, "/secrets ") {
		t.Error("the test's mounts leaked into the host's mount table")
	}
}
