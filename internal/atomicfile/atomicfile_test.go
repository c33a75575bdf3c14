package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// failHalfway writes half of the data, then fails like a full disk.
func failHalfway(f *os.File, b []byte) (int, error) {
	n, _ := f.Write(b[:len(b)/2])
	return n, errors.New("no space left on device")
}

func TestWriteLeavesOldOrNew(t *testing.T) {
	tests := []struct {
		name    string
		old     string // "" means no file before
		create  bool   // CreateFile instead of WriteFile
		replace bool   // ReplaceFile (no fsync) instead of WriteFile
		fail    bool   // the write fails half-way
		want    string // content afterwards ("" means no file)
		wantErr error  // errors.Is target, or nil for any error when fail
		ok      bool
	}{
		{name: "new file", want: "new content", ok: true},
		{name: "replace", old: "old content", want: "new content", ok: true},
		{name: "replace fails half-way", old: "old content", fail: true, want: "old content"},
		{name: "new file fails half-way", fail: true, want: ""},
		{name: "create new", create: true, want: "new content", ok: true},
		{name: "create over existing", old: "old content", create: true, want: "old content", wantErr: fs.ErrExist},
		{name: "create fails half-way", create: true, fail: true, want: ""},
		{name: "replace without sync", old: "old content", replace: true, want: "new content", ok: true},
		{name: "replace without sync fails half-way", old: "old content", replace: true, fail: true, want: "old content"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.json")
			if tt.old != "" {
				if err := os.WriteFile(path, []byte(tt.old), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tt.fail {
				write = failHalfway
				t.Cleanup(func() { write = (*os.File).Write })
			}
			op := WriteFile
			switch {
			case tt.create:
				op = CreateFile
			case tt.replace:
				op = ReplaceFile
			}
			err := op(path, []byte("new content"), 0o600)
			switch {
			case tt.ok && err != nil:
				t.Fatalf("write: %v", err)
			case !tt.ok && err == nil:
				t.Fatal("write succeeded; want an error")
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("write: %v; want %v", err, tt.wantErr)
			}
			got, rerr := os.ReadFile(path)
			switch {
			case tt.want == "" && !errors.Is(rerr, fs.ErrNotExist):
				t.Errorf("file after a failed first write: %q, %v; want none", got, rerr)
			case tt.want != "" && string(got) != tt.want:
				t.Errorf("content %q, want %q (err %v)", got, tt.want, rerr)
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if e.Name() != "state.json" {
					t.Errorf("left behind: %s", e.Name())
				}
			}
		})
	}
}

// A rename that fails (the path is a directory that holds something)
// leaves the directory as it was and no temp file beside it.
func TestFailedRenameLeavesNothing(t *testing.T) {
	for name, op := range map[string]func(string, []byte, os.FileMode) error{"WriteFile": WriteFile, "ReplaceFile": ReplaceFile} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.json")
			if err := os.MkdirAll(filepath.Join(path, "inside"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := op(path, []byte("new content"), 0o600); err == nil {
				t.Fatal("a write over a directory succeeded")
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if e.Name() != "state.json" {
					t.Errorf("left behind: %s", e.Name())
				}
			}
			if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
				t.Errorf("the directory after the failed write: %v, %v", fi, err)
			}
		})
	}
}

func TestWriteFileMode(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows has no Unix modes")
	}
	path := filepath.Join(t.TempDir(), "sub", "node.key")
	for _, perm := range []os.FileMode{0o600, 0o644} {
		if err := WriteFile(path, []byte("k"), perm); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("mode %v, want %v", fi.Mode().Perm(), perm)
		}
	}
	fi, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("created parent mode %v, want 0700", fi.Mode().Perm())
	}
}
