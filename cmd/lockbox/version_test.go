package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/lockbox-project/lockbox/cmd/lockbox/internal/versioninfo"
)

// lockbox version has docker version's shape: a Client section, then the
// manager's Server section.
func TestVersionClientAndServer(t *testing.T) {
	e := newCLIEnv(t, "")
	out := e.mustRun(t, "", "version")
	client, server, ok := strings.Cut(out, "\n\n")
	if !ok {
		t.Fatalf("no Server section:\n%s", out)
	}
	for _, section := range []string{client, server} {
		// The values are aligned with spaces: compare words.
		section = strings.Join(strings.Fields(section), " ")
		for _, want := range []string{" Version:", " Go version: " + runtime.Version(), " Git commit:", " OS/Arch: " + runtime.GOOS + "/" + runtime.GOARCH} {
			if !strings.Contains(section, want) {
				t.Errorf("section lacks %q:\n%s", want, section)
			}
		}
	}
	if !strings.HasPrefix(client, "Client:\n Version: ") || !strings.HasPrefix(server, "Server: Lockbox manager\n") {
		t.Fatalf("sections:\n%s", out)
	}

	var v versioninfo.Output
	if err := json.Unmarshal([]byte(e.mustRun(t, "", "version", "--format", "json")), &v); err != nil || v.Server == nil || v.Server.GoVersion != runtime.Version() {
		t.Fatalf("version --format json: %+v, %v", v, err)
	}
	if got := e.mustRun(t, "", "version", "-f", "{{.Server.Os}}/{{.Client.Arch}}"); got != runtime.GOOS+"/"+runtime.GOARCH+"\n" {
		t.Fatalf("version -f: %q", got)
	}
}

// With no manager, docker version prints the Client section and fails:
// so does lockbox version, with the usual "cannot reach" message.
func TestVersionWithoutManager(t *testing.T) {
	e := &cliEnv{host: "unix://" + filepath.Join(t.TempDir(), "none.sock")}
	out, err := e.run(t, "", "version")
	if err == nil || !strings.Contains(err.Error(), "cannot reach the manager") {
		t.Fatalf("err = %v", err)
	}
	if !strings.HasPrefix(out, "Client:\n") || strings.Contains(out, "Server") {
		t.Fatalf("output:\n%s", out)
	}
}

// lockbox completion SHELL writes the shell's script (cobra's generator).
func TestCompletionScripts(t *testing.T) {
	for shell, marker := range map[string]string{
		"bash":       "__start_lockbox",
		"zsh":        "#compdef lockbox",
		"fish":       "complete -c lockbox",
		"powershell": "Register-ArgumentCompleter",
	} {
		root := newRootCommand()
		var out, errb bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&errb)
		root.SetArgs([]string{"completion", shell})
		if err := root.Execute(); err != nil {
			t.Fatalf("completion %s: %v\n%s", shell, err, errb.String())
		}
		if !strings.Contains(out.String(), marker) {
			t.Errorf("completion %s: no %q in %d bytes", shell, marker, out.Len())
		}
	}
	// The scripts complete the real verbs: cobra's __complete answers.
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&bytes.Buffer{})
	root.SetArgs([]string{"__complete", "sec"})
	if err := root.Execute(); err != nil || !strings.Contains(out.String(), "secret") {
		t.Fatalf("__complete sec: %v\n%s", err, out.String())
	}
}
