//go:build linux

package busybox

import (
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestBundleRuns(t *testing.T) {
	maps := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 200000, Size: 65536}}
	tests := []struct {
		name string
		o    Options
		// script runs in the container; want is its output.
		script, want string
	}{
		{"plain", Options{}, "id -u; touch /tmp/x && echo rw", "0\nrw\n"},
		{"user", Options{User: specs.User{UID: 1000, GID: 1000}}, "id -u; id -g", "1000\n1000\n"},
		{"read-only rootfs", Options{ReadonlyRootfs: true}, "touch /x 2>/dev/null || echo ro", "ro\n"},
		{"user namespace", Options{UIDMappings: maps, GIDMappings: maps}, "cat /proc/self/uid_map | tr -s ' '; stat -c %u /bin/busybox", " 0 200000 65536\n0\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := NewBundle(t.TempDir(), tt.o)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(b.Dir, "config.json")); err != nil {
				t.Fatal(err)
			}
			r := NewRunc(t)
			ctx := Context(t)
			if err := r.Run(ctx, "c", b); err != nil {
				t.Fatal(err)
			}
			pid, err := r.Pid(ctx, "c")
			if err != nil || pid <= 0 {
				t.Fatalf("Pid = %d, %v", pid, err)
			}
			out, errOut, err := r.Exec(ctx, "c", "sh", "-c", tt.script)
			if err != nil || out != tt.want {
				t.Errorf("exec: %q (%v, %s), want %q", out, err, errOut, tt.want)
			}
			if err := r.Delete(ctx, "c"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCreateStart(t *testing.T) {
	b, err := NewBundle(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRunc(t)
	ctx := Context(t)
	if err := r.Create(ctx, "c", b); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if out, _, err := r.Exec(ctx, "c", "echo", "started"); err != nil || out != "started\n" {
		t.Errorf("exec after start: %q, %v", out, err)
	}
}
