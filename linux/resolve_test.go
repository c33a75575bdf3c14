//go:build linux

package linux

import (
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzMountpoint resolves and creates arbitrary targets in a rootfs full of
// hostile symlinks and checks that nothing is ever created outside it: not
// in a canary directory the symlinks point at, not next to the rootfs.
func FuzzMountpoint(f *testing.F) {
	for _, s := range []string{
		"/abs/x", "/rel/x/y", "/up/up/x", "/slash/etc/passwd", "/loop/x", "/proc/x",
		"/run/secrets", "/dangling/x", "/abs", "/file/x", "/a/b/c/d",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	base := f.TempDir()
	root := filepath.Join(base, "rootfs")
	canary := filepath.Join(base, "canary")
	for _, d := range []string{root, canary, filepath.Join(root, "run")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			f.Fatal(err)
		}
	}
	links := map[string]string{
		"abs": canary, "rel": strings.Repeat("../", 10) + strings.TrimPrefix(canary, "/"),
		"up": "..", "slash": "/", "loop": "loop", "proc": "/proc", "dangling": "/nowhere/at/all",
		"run/secrets": "../../..",
	}
	for name, to := range links {
		if err := os.Symlink(to, filepath.Join(root, name)); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o644); err != nil {
		f.Fatal(err)
	}
	rootfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { unix.Close(rootfd) })

	// Each input starts from the same tree: what an input created is
	// removed after it, so that a failure replays alone and the fuzzing
	// workers, which are stopped without their cleanup running, do not
	// leave hundreds of megabytes of mountpoints in the temp dir.
	initial := map[string]bool{}
	for _, d := range []string{root, filepath.Join(root, "run")} {
		ents, err := os.ReadDir(d)
		if err != nil {
			f.Fatal(err)
		}
		for _, e := range ents {
			initial[filepath.Join(d, e.Name())] = true
		}
	}
	reset := func(t *testing.T) {
		for _, d := range []string{root, filepath.Join(root, "run")} {
			ents, err := os.ReadDir(d)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if p := filepath.Join(d, e.Name()); !initial[p] {
					if err := os.RemoveAll(p); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}

	f.Fuzz(func(t *testing.T, target string, dir bool) {
		if !path.IsAbs(target) || path.Clean(target) != target || strings.ContainsRune(target, 0) || len(target) > 512 {
			return
		}
		defer reset(t)
		fd, err := mountpoint(rootfd, target, dir, ownBind{}, "")
		if err == nil {
			unix.Close(fd)
		}
		if ents, _ := os.ReadDir(canary); len(ents) != 0 {
			t.Fatalf("target %q created %v in the canary outside the root", target, ents)
		}
		if ents, _ := os.ReadDir(base); len(ents) != 2 {
			t.Fatalf("target %q created something next to the root: %v", target, ents)
		}
	})
}
