//go:build linux

package harness

import (
	"os"
	"path/filepath"
	"testing"
)

// ToolsDir is where hack/deps.sh installs containerd v2 and ctr.
func ToolsDir() string {
	if d := os.Getenv("LOCKBOX_TOOLS"); d != "" {
		return filepath.Join(d, "bin")
	}
	return "/opt/lockbox/tools/bin"
}

// LockboxBin is the directory holding the built lockbox and
// lockbox-runtime (LOCKBOX_BIN, set by "make integration").
func LockboxBin(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("LOCKBOX_BIN")
	if dir == "" {
		t.Fatal("LOCKBOX_BIN is not set: run the integration tests with `make integration` (it builds bin/ and sets it)")
	}
	for _, b := range []string{"lockbox", "lockbox-runtime"} {
		need(t, filepath.Join(dir, b), "make build")
	}
	return dir
}

// need fails the test when path is not an executable file.
func need(t testing.TB, path, fix string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s is missing or not executable: run `%s`", path, fix)
	}
	return path
}
