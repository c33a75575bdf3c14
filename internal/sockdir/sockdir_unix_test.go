//go:build unix

package sockdir

import (
	"os"
	"path/filepath"
	"testing"
)

func TestEnsure(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	tests := []struct {
		name     string
		mode     os.FileMode // of the existing directory; 0: missing
		uid      int
		wantErr  bool
		wantMode os.FileMode
	}{
		{name: "missing", wantMode: 0o700},
		{name: "0700", mode: 0o700, wantMode: 0o700},
		{name: "0755 (like /run)", mode: 0o755, wantMode: 0o755},
		{name: "world-writable (like /tmp)", mode: os.ModeSticky | 0o777, wantErr: true, wantMode: os.ModeSticky | 0o777},
		{name: "group-writable", mode: 0o770, wantErr: true, wantMode: 0o770},
		{name: "owned by another user", mode: 0o700, uid: 65534, wantErr: true, wantMode: 0o700},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "run")
			if tt.mode != 0 {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Chown(dir, tt.uid, tt.uid); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(dir, tt.mode); err != nil {
					t.Fatal(err)
				}
			}
			err := Ensure(dir, "test socket", "/run/x")
			if (err != nil) != tt.wantErr {
				t.Errorf("Ensure: %v, want error %v", err, tt.wantErr)
			}
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode() & (os.ModePerm | os.ModeSticky); got != tt.wantMode {
				t.Errorf("directory mode %v, want %v", got, tt.wantMode)
			}
		})
	}
}
