//go:build linux

package linux

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/mounter"
)

// TestWipeNeverBlocksNorFollows swaps a secret's file for a FIFO or for a
// symlink to a host file before the wipe, as a container that can remount
// its secrets writable (TestWipeWhatTheContainerWrote) may do. Opening a
// FIFO for writing blocks until a reader comes, which a hostile container
// never provides: the wipe, and the agent's release waiting on it, would
// hang with the secrets still in memory. The wipe must return promptly,
// free every page of the tmpfs, never write through a symlink, and never
// write into a FIFO someone reads.
func TestWipeNeverBlocksNorFollows(t *testing.T) {
	const id = "id-a"
	tests := []struct {
		name string
		// where is the name swapped, relative to the tmpfs root.
		where string
		// swap puts the hostile entry at where (the old one is gone).
		swap func(t *testing.T, dirfd int, name, hostFile string)
		// reader: a FIFO is held open for reading, as a container could,
		// so that a non-blocking open for writing succeeds.
		reader bool
	}{
		{name: "file by ID is a FIFO nobody reads", where: id, swap: mkfifo},
		{name: "file by ID is a FIFO read by the container", where: id, swap: mkfifo, reader: true},
		{name: "file by ID is a symlink to a host file", where: id, swap: symlinkTo},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hostFile := filepath.Join(t.TempDir(), "host-file")
			hostData := []byte("host data the wipe must not touch")
			if err := os.WriteFile(hostFile, hostData, 0o644); err != nil {
				t.Fatal(err)
			}
			src := memSource{id: secretData("a", 4096)}
			_, m := build(t, []mounter.Grant{{SecretID: id, SecretName: "a"}}, src)
			// A view of the whole tmpfs: it keeps the tmpfs alive after
			// the wipe, so that what the wipe left can be measured.
			tree, err := unix.OpenTree(m.fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
			if err != nil {
				t.Fatal(err)
			}
			view, err := unix.Openat(tree, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			unix.Close(tree)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(view)

			if err := m.setWritable(true); err != nil {
				t.Fatal(err)
			}
			if err := unix.Unlinkat(m.fd, tt.where, 0); err != nil && err != unix.ENOENT {
				t.Fatal(err)
			}
			tt.swap(t, m.fd, tt.where, hostFile)
			if tt.reader {
				r, err := unix.Openat(m.fd, tt.where, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer func() {
					// Nothing was written into the FIFO.
					var b [16]byte
					if n, err := unix.Read(r, b[:]); n > 0 {
						t.Errorf("the wipe wrote %d bytes into the container's FIFO", n)
					} else if err != nil && err != unix.EAGAIN {
						t.Errorf("read the FIFO: %v", err)
					}
					unix.Close(r)
				}()
			}
			if err := m.setWritable(false); err != nil {
				t.Fatal(err)
			}

			mfd := m.fd
			done := make(chan error, 1)
			go func() { done <- m.Wipe() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Wipe: %v", err)
				}
			case <-time.After(10 * time.Second):
				// Release the wipe stuck in open(2) by reading the FIFO,
				// so that the test fails instead of hanging.
				if r, err := unix.Openat(mfd, tt.where, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
					defer unix.Close(r)
				}
				<-done
				t.Fatal("the wipe blocked on what the container put in the tmpfs")
			}
			if m.fd != -1 {
				t.Errorf("the mounter's tmpfs fd is %d after the wipe, want it closed", m.fd)
			}
			var sfs unix.Statfs_t
			if err := unix.Fstatfs(view, &sfs); err != nil {
				t.Fatal(err)
			}
			if sfs.Bfree != sfs.Blocks {
				t.Errorf("the tmpfs still holds %d of %d blocks after the wipe", sfs.Blocks-sfs.Bfree, sfs.Blocks)
			}
			if names, err := readDirNames(view); err != nil || len(names) != 0 {
				t.Errorf("the tmpfs after the wipe holds %v (%v)", names, err)
			}
			if got, err := os.ReadFile(hostFile); err != nil || !bytes.Equal(got, hostData) {
				t.Errorf("host file after the wipe: %q, %v; want it untouched", got, err)
			}
		})
	}
}

func mkfifo(t *testing.T, dirfd int, name, _ string) {
	t.Helper()
	if err := unix.Mknodat(dirfd, name, unix.S_IFIFO|0o600, 0); err != nil {
		t.Fatal(err)
	}
}

func symlinkTo(t *testing.T, dirfd int, name, hostFile string) {
	t.Helper()
	if err := unix.Symlinkat(hostFile, dirfd, name); err != nil {
		t.Fatal(err)
	}
}
