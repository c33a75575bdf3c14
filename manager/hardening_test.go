//go:build linux

package manager

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestProcessHardenedAndSocketDirLeftAlone: a running manager is not
// dumpable and writes no core file (keys live in its memory), and its
// admin socket in an existing directory leaves that directory's mode
// alone (it used to chmod it 0700: --admin-socket /tmp/x.sock closed /tmp).
func TestProcessHardenedAndSocketDirLeftAlone(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1")
	shared := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.AdminSocket = filepath.Join(shared, "manager.sock")
	m := startManager(t, cfg)

	d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil || d != 0 {
		t.Errorf("manager process dumpable=%d (%v), want 0", d, err)
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &rl); err != nil || rl.Cur != 0 || rl.Max != 0 {
		t.Errorf("RLIMIT_CORE %+v (%v), want 0", rl, err)
	}
	fi, err := os.Stat(shared)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o755 {
		t.Errorf("the admin socket's existing directory went from 0755 to %#o", got)
	}
	fi, err = os.Stat(m.sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin socket: %v %v", fi.Mode(), err)
	}

	// A world-writable directory (like /tmp) is refused, and left as it is.
	tmp := filepath.Join(t.TempDir(), "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	cfg2 := testConfig(t, "127.0.0.2")
	cfg2.AdminSocket = filepath.Join(tmp, "x.sock")
	m2, err := New(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "lets other users replace the socket") {
		t.Errorf("admin socket in a world-writable directory: %v", err)
	}
	if fi, err := os.Stat(tmp); err != nil || fi.Mode()&(os.ModePerm|os.ModeSticky) != os.ModeSticky|0o777 {
		t.Errorf("world-writable directory changed: %v %v", fi.Mode(), err)
	}
}
