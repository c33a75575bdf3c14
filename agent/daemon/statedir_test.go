//go:build !windows

package daemon

import (
	"os"
	"path/filepath"
	"testing"
)

// TestStateDir: a missing state directory is made 0700; an existing one is
// never chmod'ed (--state-dir /var/lib must not close /var/lib to everyone
// else) and is refused unless it is the agent's alone: others could list
// the container records, or plant ones and replace the node's credentials.
func TestStateDir(t *testing.T) {
	tests := []struct {
		name     string
		mode     os.FileMode // of the existing directory; 0: missing
		uid      int
		wantErr  bool
		wantMode os.FileMode
	}{
		{name: "missing", wantMode: 0o700},
		{name: "root 0700", mode: 0o700, wantMode: 0o700},
		{name: "root 0755 (like /var/lib)", mode: 0o755, wantErr: true, wantMode: 0o755},
		{name: "group-writable", mode: 0o770, wantErr: true, wantMode: 0o770},
		{name: "world-writable", mode: os.ModeSticky | 0o777, wantErr: true, wantMode: os.ModeSticky | 0o777},
		{name: "owned by another user", mode: 0o700, uid: 65534, wantErr: true, wantMode: 0o700},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "lib", "state")
			if tt.mode != 0 {
				if err := os.MkdirAll(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Chown(dir, tt.uid, tt.uid); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(dir, tt.mode); err != nil {
					t.Fatal(err)
				}
			}
			err := stateDir(dir)
			if (err != nil) != tt.wantErr {
				t.Errorf("stateDir: %v, want error %v", err, tt.wantErr)
			}
			fi, serr := os.Stat(dir)
			if serr != nil {
				t.Fatal(serr)
			}
			if got := fi.Mode() & (os.ModePerm | os.ModeSticky); got != tt.wantMode {
				t.Errorf("directory mode %v, want %v", got, tt.wantMode)
			}
			if err != nil {
				t.Log(err)
			}
		})
	}
}
