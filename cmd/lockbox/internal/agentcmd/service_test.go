package agentcmd

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

// install-service takes the agent's flags after "--", refuses a token on
// standard input (a service has none), and off Windows says where it
// works.
func TestAgentInstallServiceArgs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "flags without --", args: []string{"agent", "install-service", "x"}, wantErr: "after --"},
		{name: "token on stdin", args: []string{"agent", "install-service", "--", "--manager", "m:4243", "--token-file", "-"}, wantErr: "no standard input"},
		{name: "token on stdin, = form", args: []string{"agent", "install-service", "--", "--token-file=-"}, wantErr: "no standard input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := newRoot()
			root.SetArgs(tc.args)
			root.SetOut(&bytes.Buffer{})
			root.SetErr(&bytes.Buffer{})
			if err := root.Execute(); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("%v: %v, want an error with %q", tc.args, err, tc.wantErr)
			}
		})
	}
	if runtime.GOOS != "windows" {
		for _, args := range [][]string{
			{"agent", "install-service", "--", "--manager", "m:4243", "--token-file", `C:\lockbox\token`},
			{"agent", "uninstall-service"},
		} {
			root := newRoot()
			root.SetArgs(args)
			root.SetOut(&bytes.Buffer{})
			root.SetErr(&bytes.Buffer{})
			if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "on Windows only") {
				t.Errorf("%v off Windows: %v, want an error saying Windows only", args, err)
			}
		}
	}
}
