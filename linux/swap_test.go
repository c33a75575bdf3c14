//go:build linux

package linux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/mounter"
)

// rotated returns plan's files with the grant at target pointing at the
// secret id instead, sized from src.
func nextPlan(t testing.TB, grants []mounter.Grant, src memSource) *mounter.Plan {
	t.Helper()
	for i := range grants {
		grants[i].Size = int64(len(src[grants[i].SecretID]))
	}
	p, err := mounter.NewPlan(mounter.Linux, grants)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// readLoop reads paths in a tight loop from n goroutines until stop is
// closed and returns what it saw that is not one of valid: torn, empty or
// missing files.
func readLoop(paths []string, n int, valid func(path string, b []byte) bool, stop <-chan struct{}) (func() []string, *atomic.Int64) {
	var (
		mu    sync.Mutex
		bad   []string
		wg    sync.WaitGroup
		reads atomic.Int64
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				p := paths[i%len(paths)]
				b, err := os.ReadFile(p)
				reads.Add(1)
				if err != nil || !valid(p, b) {
					mu.Lock()
					if len(bad) < 20 {
						bad = append(bad, fmt.Sprintf("%s: %d bytes, err %v", p, len(b), err))
					}
					mu.Unlock()
				}
			}
		}(i)
	}
	return func() []string { wg.Wait(); return bad }, &reads
}

// TestUpdateRotations rotates a relative and an absolute single-file target
// 100 times while readers on the host (through the container's root) and
// one in the container read them in a tight loop: none ever sees a file
// missing, empty or mixed.
func TestUpdateRotations(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts func(mp string) busybox.Options
		c    func(c mounter.Container) mounter.Container
	}{
		{"writable root", func(string) busybox.Options { return busybox.Options{} }, nil},
		{"read-only root", func(mp string) busybox.Options {
			return busybox.Options{ReadonlyRootfs: true, Mounts: mountpointMounts(mp, "/run/secrets/a", "/etc/app/cert.pem")}
		}, nil},
		{"user namespace", func(mp string) busybox.Options {
			maps := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
			return busybox.Options{UIDMappings: maps, GIDMappings: maps, Mounts: mountpointMounts(mp, "/run/secrets/a", "/etc/app/cert.pem")}
		}, func(c mounter.Container) mounter.Container {
			m := []mounter.IDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
			c.UIDMappings, c.GIDMappings = m, m
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const rotations = 100
			src := memSource{}
			valid := map[string]bool{}
			for v := 0; v <= rotations; v++ {
				for _, s := range []string{"a", "b"} {
					// Sizes differ between versions: a torn read shows.
					d := secretData(fmt.Sprintf("%s%d", s, v), 100+v*37%900)
					src[fmt.Sprintf("id-%s%d", s, v)] = d
					valid[string(d)] = true
				}
			}
			grantsAt := func(v int) []mounter.Grant {
				return []mounter.Grant{
					{SecretID: fmt.Sprintf("id-a%d", v), SecretName: "a", UID: "1000", Mode: 0o440},
					{SecretID: fmt.Sprintf("id-b%d", v), SecretName: "b", Target: "/etc/app/cert.pem"},
				}
			}
			mp := testMountpointSource(t)
			_, m := buildWith(t, grantsAt(0), src, mp)
			r, _, id, pid := runContainer(t, tc.opts(mp))
			c := mounter.Container{ID: id, Pid: pid}
			if tc.c != nil {
				c = tc.c(c)
			}
			if err := m.Attach(context.Background(), c); err != nil {
				t.Fatalf("Attach: %v", err)
			}
			fdsBefore := len(openFDs(t))
			// The reader in the container: cat every file as fast as sh
			// can and log any read that is not a whole version.
			ctx, cancel := context.WithCancel(busybox.Context(t))
			defer cancel()
			inside := make(chan string, 1)
			go func() {
				out, _, _ := r.Exec(ctx, id, "sh", "-c", `n=0; while [ ! -e /dev/shm/stop ]; do for f in /run/secrets/a /etc/app/cert.pem; do c=$(cat $f 2>&1) || echo "ERR $f $c"; case "$c" in a*|b*) ;; *) echo "BAD $f ${#c}";; esac; done; n=$((n+1)); done; echo reads $n`)
				inside <- out
			}()
			root := filepath.Join("/proc", itoa(pid), "root")
			stop := make(chan struct{})
			wait, reads := readLoop([]string{root + "/run/secrets/a", root + "/etc/app/cert.pem"}, 4,
				func(_ string, b []byte) bool { return valid[string(b)] }, stop)
			for v := 1; v <= rotations; v++ {
				files, err := m.Update(context.Background(), c, nextPlan(t, grantsAt(v), src), src)
				if err != nil {
					t.Fatalf("rotation %d: %v", v, err)
				}
				if len(files) != 2 || files[0].SecretID != fmt.Sprintf("id-a%d", v) {
					t.Fatalf("rotation %d: Update returned %+v", v, files)
				}
			}
			close(stop)
			bad := wait()
			execOK(t, r, id, "touch /dev/shm/stop")
			out := <-inside
			t.Logf("host reads: %d; container reader: %s", reads.Load(), strings.TrimSpace(lastLine(out)))
			// A swap keeps no fd: 100 rotations of 2 targets leaked 200
			// (an unclosed check of the new top) before.
			if after := len(openFDs(t)); after > fdsBefore+4 {
				t.Errorf("open fds %d before the rotations, %d after: a swap leaks fds", fdsBefore, after)
			}
			if len(bad) > 0 {
				t.Errorf("host readers saw %d bad reads: %q", len(bad), bad)
			}
			if strings.Contains(out, "BAD") || strings.Contains(out, "ERR") {
				t.Errorf("the container's reader saw bad reads:\n%s", out)
			}
			got := execOK(t, r, id, "stat -c '%u:%g %a' /run/secrets/a; cat /run/secrets/a /etc/app/cert.pem")
			want := "1000:0 440\n" + string(src[fmt.Sprintf("id-a%d", rotations)]) + string(src[fmt.Sprintf("id-b%d", rotations)])
			if got != want {
				t.Errorf("after the rotations the container sees %q, want %q", got, want)
			}
			// One secret mount per target, plus the mountpoint bind under
			// it where there is one: the old ones are detached and the
			// mountpoint never uncovered.
			mi := execOK(t, r, id, "grep -cE ' /run/secrets/a ' /proc/self/mountinfo; grep -cE ' /etc/app/cert.pem ' /proc/self/mountinfo")
			wantMounts := "1\n1\n"
			if len(tc.opts(mp).Mounts) > 0 {
				wantMounts = "2\n2\n"
			}
			if mi != wantMounts {
				t.Errorf("mounts at the targets: %q, want %q", mi, wantMounts)
			}
			// Nobody holds the old files: a reclaim takes them all.
			if left := m.reclaim(); left != 0 {
				t.Errorf("reclaim left %d files", left)
			}
		})
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// TestUpdateOpenFileKeepsOldBytes: a reader that holds the old file open
// reads all of its old bytes after the swap; once it closes the file,
// reclaim overwrites it (a handle that does not count as open, O_PATH,
// then finds it empty).
func TestUpdateOpenFileKeepsOldBytes(t *testing.T) {
	src := memSource{"id-1": secretData("one", 9000), "id-2": secretData("two", 50)}
	_, m := build(t, []mounter.Grant{{SecretID: "id-1", SecretName: "s"}}, src)
	_, _, id, pid := runContainer(t, busybox.Options{})
	c := mounter.Container{ID: id, Pid: pid}
	if err := m.Attach(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join("/proc", itoa(pid), "root/run/secrets/s")
	f, err := os.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 100)
	if _, err := f.Read(head); err != nil {
		t.Fatal(err)
	}
	pathFd, err := unix.Open(target, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pathFd)

	if _, err := m.Update(context.Background(), c, nextPlan(t, []mounter.Grant{{SecretID: "id-2", SecretName: "s"}}, src), src); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(target); err != nil || !bytes.Equal(b, src["id-2"]) {
		t.Fatalf("after the swap the target holds %d bytes (%v), want the new secret", len(b), err)
	}
	if left := m.reclaim(); left != 1 {
		t.Fatalf("reclaim with the old file open left %d files, want 1", left)
	}
	rest := new(bytes.Buffer)
	if _, err := rest.ReadFrom(f); err != nil {
		t.Fatal(err)
	}
	if got := append(head, rest.Bytes()...); !bytes.Equal(got, src["id-1"]) {
		t.Fatalf("the open reader read %d bytes that are not the old secret", len(got))
	}
	f.Close()
	if left := m.reclaim(); left != 0 {
		t.Fatalf("reclaim after the reader closed left %d files", left)
	}
	again, err := os.Open("/proc/self/fd/" + itoa(pathFd))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if b, _ := again.Stat(); b.Size() != 0 {
		t.Errorf("the old file still holds %d bytes after reclaim", b.Size())
	}
}

// TestUpdateAddRemoveChange adds a target, removes one and changes a
// mode in one update.
func TestUpdateAddRemoveChange(t *testing.T) {
	src := memSource{"id-a": secretData("a", 10), "id-b": secretData("b", 20), "id-c": secretData("c", 30)}
	_, m := build(t, []mounter.Grant{{SecretID: "id-a", SecretName: "a"}, {SecretID: "id-b", SecretName: "b", Target: "/etc/b"}}, src)
	r, _, id, pid := runContainer(t, busybox.Options{})
	c := mounter.Container{ID: id, Pid: pid}
	if err := m.Attach(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	next := nextPlan(t, []mounter.Grant{{SecretID: "id-a", SecretName: "a", Mode: 0o400}, {SecretID: "id-c", SecretName: "c", Target: "/opt/new/c"}}, src)
	files, err := m.Update(context.Background(), c, next, src)
	if err != nil {
		t.Fatal(err)
	}
	if d := mounter.DiffFiles(files, next.Files); !d.Empty() {
		t.Errorf("Update returned files that differ from the plan: %+v", d)
	}
	got := execOK(t, r, id, "stat -c '%a %s' /run/secrets/a /etc/b; cat /opt/new/c; grep -c ' /etc/b ' /proc/self/mountinfo || true")
	want := "400 10\n644 0\n" + string(src["id-c"]) + "0\n"
	if got != want {
		t.Errorf("container sees %q, want %q", got, want)
	}
	// Nothing to do the second time.
	if _, err := m.Update(context.Background(), c, next, src); err != nil {
		t.Fatal(err)
	}
	// Update from a plan with no file back to one.
	if _, err := m.Update(context.Background(), c, nextPlan(t, nil, src), src); err != nil {
		t.Fatal(err)
	}
	if got := execOK(t, r, id, "grep -cE ' (/run/secrets/a|/opt/new/c) ' /proc/self/mountinfo || true"); got != "0\n" {
		t.Errorf("mounts left after removing every file: %q", got)
	}
}

// TestUpdateEmptyStart: a container that started with no file gets its
// tmpfs at its first update.
func TestUpdateEmptyStart(t *testing.T) {
	src := memSource{"id-a": secretData("a", 10)}
	_, m := build(t, nil, src)
	r, _, id, pid := runContainer(t, busybox.Options{})
	c := mounter.Container{ID: id, Pid: pid}
	if err := m.Attach(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Update(context.Background(), c, nextPlan(t, []mounter.Grant{{SecretID: "id-a", SecretName: "a"}}, src), src); err != nil {
		t.Fatal(err)
	}
	if got := execOK(t, r, id, "cat /run/secrets/a"); got != string(src["id-a"]) {
		t.Errorf("container sees %q", got)
	}
}

// TestUpdateHostile: a container that replaced its target (a symlink out
// of its root in its place) or mounted something over it keeps what it
// made; the update of that target fails and nothing outside the root is
// touched.
func TestUpdateHostile(t *testing.T) {
	src := memSource{"id-1": secretData("one", 10), "id-2": secretData("two", 10)}
	host := filepath.Join(t.TempDir(), "host-file")
	if err := os.WriteFile(host, []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, script string
		nsenter      []string
	}{
		{"symlink in place", "mv /run/secrets /run/old && mkdir /run/secrets && ln -s " + host + " /run/secrets/s", nil},
		{"mounted over", "", []string{"mount", "--bind", "/etc/passwd", "/run/secrets/s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, m := build(t, []mounter.Grant{{SecretID: "id-1", SecretName: "s"}}, src)
			r, _, id, pid := runContainer(t, busybox.Options{})
			c := mounter.Container{ID: id, Pid: pid}
			if err := m.Attach(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			if tc.script != "" {
				execOK(t, r, id, tc.script)
			}
			if tc.nsenter != nil {
				args := append([]string{"-t", itoa(pid), "-m"}, tc.nsenter...)
				if out, err := exec.Command("nsenter", args...).CombinedOutput(); err != nil {
					t.Fatalf("nsenter: %v: %s", err, out)
				}
			}
			before := execOK(t, r, id, "cat /run/secrets/s 2>&1; grep -c ' /run/secrets/s ' /proc/self/mountinfo || true")
			files, err := m.Update(context.Background(), c, nextPlan(t, []mounter.Grant{{SecretID: "id-2", SecretName: "s"}}, src), src)
			if !errors.Is(err, ErrNotOurs) {
				t.Fatalf("Update = %v, want ErrNotOurs", err)
			}
			if len(files) != 1 || files[0].SecretID != "id-1" {
				t.Errorf("Update reports the container holds %+v", files)
			}
			if after := execOK(t, r, id, "cat /run/secrets/s 2>&1; grep -c ' /run/secrets/s ' /proc/self/mountinfo || true"); after != before {
				t.Errorf("the container's target changed: %q, was %q", after, before)
			}
			if b, _ := os.ReadFile(host); string(b) != "host" {
				t.Errorf("the host file holds %q", b)
			}
			if m.Retired() != 0 {
				t.Errorf("%d files retired by a failed update", m.Retired())
			}
		})
	}
}

// TestUpdateWithoutBeneath: a kernel without MOVE_MOUNT_BENEATH refuses
// the update (ErrBeneathUnsupported) and the container keeps its file:
// never the unmount-then-mount that would show a reader no file.
func TestUpdateWithoutBeneath(t *testing.T) {
	old := moveBeneath
	moveBeneath = func(int, int) error { return unix.EINVAL }
	t.Cleanup(func() { moveBeneath = old })
	src := memSource{"id-1": secretData("one", 10), "id-2": secretData("two", 10)}
	_, m := build(t, []mounter.Grant{{SecretID: "id-1", SecretName: "s"}}, src)
	r, _, id, pid := runContainer(t, busybox.Options{})
	c := mounter.Container{ID: id, Pid: pid}
	if err := m.Attach(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	fds := openFDs(t)
	files, err := m.Update(context.Background(), c, nextPlan(t, []mounter.Grant{{SecretID: "id-2", SecretName: "s"}}, src), src)
	if after := openFDs(t); len(after) != len(fds) {
		t.Errorf("a failed update left fds: %v, before: %v", after, fds)
	}
	if !errors.Is(err, ErrBeneathUnsupported) {
		t.Fatalf("Update = %v, want ErrBeneathUnsupported", err)
	}
	t.Log(err)
	if len(files) != 1 || files[0].SecretID != "id-1" {
		t.Errorf("Update reports %+v", files)
	}
	if got := execOK(t, r, id, "cat /run/secrets/s"); got != string(src["id-1"]) {
		t.Errorf("container sees %q, want the old file", got)
	}
	// The new file was never attached: it is gone from the tmpfs.
	names, err := readDirAt(m.fd, ".")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "id-1" {
		t.Errorf("tmpfs holds %v", names)
	}
}

// TestUpdateRecovered: after an agent restart (its tmpfs fd gone, the
// container's mounts taken back by Recover) a live update still replaces a
// file, in a tmpfs of its own, keeps the others, and the old file, reached
// only through its clone, is overwritten once nobody holds it; a second
// update and the wipe at the end reach both generations.
func TestUpdateRecovered(t *testing.T) {
	src := memSource{"id-1": secretData("one", 700), "id-2": secretData("two", 50), "id-k": secretData("keep", 20), "id-3": secretData("three", 9)}
	r, _, id, pid := runContainer(t, busybox.Options{})
	grants := func(a string) []mounter.Grant {
		return []mounter.Grant{{SecretID: a, SecretName: "s"}, {SecretID: "id-k", SecretName: "k", Target: "/etc/k"}}
	}
	plan, m := buildOwned(t, grants("id-1"), src, id)
	c := mounter.Container{ID: id, Pid: pid}
	if err := m.Attach(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	// The agent dies: its fd closes without a wipe.
	unix.Close(m.fd)
	m.fd, m.wiped = -1, true
	held, err := os.Open(filepath.Join("/proc", itoa(pid), "root/run/secrets/s"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	rec, err := New().Recover(context.Background(), c, plan)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Wipe() })
	if d := mounter.DiffFiles(rec.Files(), plan.Files); !d.Empty() {
		t.Fatalf("recovered files differ from the plan: %+v", d)
	}
	next := nextPlan(t, grants("id-2"), src)
	next.Owner = id
	files, err := rec.Update(context.Background(), c, next, src)
	if err != nil {
		t.Fatal(err)
	}
	if d := mounter.DiffFiles(files, next.Files); !d.Empty() {
		t.Errorf("Update returned files that differ from the plan: %+v", d)
	}
	if got := execOK(t, r, id, "cat /run/secrets/s /etc/k"); got != string(src["id-2"])+string(src["id-k"]) {
		t.Errorf("container sees %q", got)
	}
	if left := rec.reclaim(); left != 1 {
		t.Errorf("reclaim with the old file open left %d, want 1", left)
	}
	b := new(bytes.Buffer)
	if _, err := b.ReadFrom(held); err != nil || !bytes.Equal(b.Bytes(), src["id-1"]) {
		t.Errorf("the open reader read %d bytes (%v), want the old secret", b.Len(), err)
	}
	held.Close()
	if left := rec.reclaim(); left != 0 {
		t.Errorf("reclaim after the reader closed left %d", left)
	}
	// A second update replaces a file of the new tmpfs.
	next = nextPlan(t, grants("id-3"), src)
	if _, err := rec.Update(context.Background(), c, next, src); err != nil {
		t.Fatal(err)
	}
	if got := execOK(t, r, id, "cat /run/secrets/s /etc/k"); got != string(src["id-3"])+string(src["id-k"]) {
		t.Errorf("container sees %q", got)
	}
	// A restarted agent finds the new file too: it carries the mark.
	again, err := New().Recover(context.Background(), c, next)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.clones) != 2 {
		t.Errorf("a second recovery found %d mounts, want 2", len(again.clones))
	}
	again.Wipe()
	if got := execOK(t, r, id, "stat -c %s /run/secrets/s /etc/k"); got != "0\n0\n" {
		t.Errorf("after the wipe the container sees sizes %q", got)
	}
}
