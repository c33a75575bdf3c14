package windows

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMountSource(t *testing.T) {
	const (
		tokA = "0123456789abcdef0123456789abcdef"
		tokB = "fedcba9876543210fedcba9876543210"
		tokC = "00000000000000000000000000000000"
	)
	for _, tc := range []struct {
		name    string
		owners  map[string]string // token -> owner file ("" = none)
		id      string
		want    string // token whose files dir is the answer
		wantErr string
	}{
		{name: "the container's mount", owners: map[string]string{tokA: "c1", tokB: "c2"}, id: "c1", want: tokA},
		{name: "built, not attached yet: not the container's", owners: map[string]string{tokA: "", tokB: "c2"}, id: "c1", wantErr: "holds no secrets directory"},
		{name: "owner is a prefix", owners: map[string]string{tokA: "c10"}, id: "c1", wantErr: "holds no secrets directory"},
		{name: "two mounts name the container", owners: map[string]string{tokA: "c1", tokC: "c1"}, id: "c1", wantErr: "refusing to guess"},
		{name: "not a container ID", owners: map[string]string{tokA: "c1"}, id: "", wantErr: "must be 1 to 256"},
		{name: "not a token directory", owners: map[string]string{"notatoken": "c1"}, id: "c1", wantErr: "holds no secrets directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := plainTempDir(t)
			for tok, owner := range tc.owners {
				dir := filepath.Join(state, secretsDirName, tok)
				if err := os.MkdirAll(filepath.Join(dir, filesDirName), 0o700); err != nil {
					t.Fatal(err)
				}
				if owner != "" {
					if err := os.WriteFile(filepath.Join(dir, ownerFileName), []byte(owner), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			got, err := MountSource(state, tc.id)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("MountSource = %q, %v; want an error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(state, secretsDirName, tc.want, filesDirName); got != want {
				t.Errorf("MountSource = %q, want %q", got, want)
			}
		})
	}
}

// plainTempDir is t.TempDir, removed entry by entry: os.RemoveAll's
// handle-based walk fails under wine, where hack/test-windows.sh runs this
// test too.
func plainTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lockbox-windows-source-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var remove func(p string) error
		remove = func(p string) error {
			if entries, err := os.ReadDir(p); err == nil {
				for _, e := range entries {
					if err := remove(filepath.Join(p, e.Name())); err != nil {
						return err
					}
				}
			}
			return os.Remove(p)
		}
		if err := remove(dir); err != nil {
			t.Errorf("clean up %s: %v", dir, err)
		}
	})
	return dir
}
