package daemonflags

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestTokenFileRead(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	writeMode := func(name, data string, mode os.FileMode) string {
		p := write(name, data)
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		file    string
		stdin   string
		want    string
		wantErr string
		// unixOnly: Windows has no modes to check.
		unixOnly bool
	}{
		{name: "no flag", file: "", want: ""},
		{name: "file, trimmed", file: write("tok", "  LBXTKN-1-abc\n\n"), want: "LBXTKN-1-abc"},
		{name: "stdin, trimmed", file: "-", stdin: "LBXTKN-1-abc\r\n", want: "LBXTKN-1-abc"},
		{name: "empty file", file: write("empty", "\n"), wantErr: "is empty"},
		{name: "empty stdin", file: "-", stdin: "", wantErr: "standard input is empty"},
		{name: "missing file", file: filepath.Join(dir, "none"), wantErr: "--token-file: open"},
		{name: "too big", file: write("big", strings.Repeat("a", maxTokenFile+1)), wantErr: "not a join token"},
		{name: "readable by others", file: writeMode("open", "LBXTKN-1-abc", 0o644), wantErr: "chmod 600", unixOnly: true},
		{name: "readable by the group", file: writeMode("group", "LBXTKN-1-abc", 0o640), wantErr: "chmod 600", unixOnly: true},
		{name: "just fits", file: write("fits", strings.Repeat("a", maxTokenFile)), want: strings.Repeat("a", maxTokenFile)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.unixOnly && runtime.GOOS == "windows" {
				t.Skip("no Unix modes")
			}
			tf := Token{file: tt.file}
			got, err := tf.Read(strings.NewReader(tt.stdin))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %q, %v; want an error saying %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
