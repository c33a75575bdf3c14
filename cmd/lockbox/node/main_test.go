package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/lockbox-project/lockbox/cmd/lockbox/internal/versioninfo"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&bytes.Buffer{})
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// What a node never runs is not linked: the whole point of this build.
func TestLinksNeitherManagerNorEtcd(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := strings.Fields(string(out))
	for _, pkg := range pkgs {
		for _, heavy := range []string{
			"go.etcd.io/",
			"github.com/lockbox-project/lockbox/manager",
			"github.com/compose-spec/",
			"go.uber.org/zap",
		} {
			if strings.HasPrefix(pkg, heavy) {
				t.Errorf("the node build links %s", pkg)
			}
		}
	}
	// And the agent is in it.
	if !slices.Contains(pkgs, "github.com/lockbox-project/lockbox/agent/daemon") {
		t.Errorf("the node build does not link the agent (agent/daemon)")
	}
}

// The full build's other commands, with their flags, get an error that
// says where they are, not cobra's "unknown command" or "unknown flag".
func TestOtherCommandsNameTheFullBuild(t *testing.T) {
	for _, args := range [][]string{
		{"manager", "--data-dir", "/var/lib/lockbox/manager"},
		{"secret", "ls", "-q"},
		{"service", "create", "web", "--secret", "source=db_password"},
		{"join-token", "worker", "-q"},
		{"-H", "unix:///run/lockbox/manager.sock", "node", "ls"},
		{"stack", "deploy", "-c", "compose.yaml", "app"},
	} {
		_, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), "not in this lockbox, the node build") || !strings.Contains(err.Error(), "full lockbox build") {
			t.Errorf("lockbox %s: %v, want the node build's error", strings.Join(args, " "), err)
		}
	}
	for _, args := range [][]string{{}, {"--help"}, {"help"}} {
		out, err := run(t, args...)
		if err != nil || !strings.Contains(out, "node build") || !strings.Contains(out, "agent") {
			t.Errorf("lockbox %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// lockbox agent is the full build's: its flags and subcommands are there.
func TestAgentIsThere(t *testing.T) {
	out, err := run(t, "agent", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--manager", "--token-file", "--state-dir", "--socket", "--nri", "ls", "install-service"} {
		if !strings.Contains(out, want) {
			t.Errorf("lockbox agent --help lacks %q:\n%s", want, out)
		}
	}
	// The agent's own checks run: a retired flag is refused before
	// anything starts.
	if _, err := run(t, "agent", "--token", "x"); err == nil || !strings.Contains(err.Error(), "--token is no longer accepted") {
		t.Errorf("lockbox agent --token: %v", err)
	}
}

// lockbox version is the full build's Client section, with no Server.
func TestVersion(t *testing.T) {
	out, err := run(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "Client:\n Version: ") || strings.Contains(out, "Server") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("lockbox version:\n%s", out)
	}
	out, err = run(t, "version", "--format", "json")
	var v versioninfo.Output
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.Server != nil || v.Client.GoVersion != runtime.Version() {
		t.Errorf("lockbox version --format json: %v\n%s", err, out)
	}
	if out, err := run(t, "version", "-f", "{{.Client.Os}}/{{.Client.Arch}}"); err != nil || out != runtime.GOOS+"/"+runtime.GOARCH+"\n" {
		t.Errorf("lockbox version -f: %q, %v", out, err)
	}
	if _, err := run(t, "version", "-f", "{{.Nope"); err == nil || !strings.Contains(err.Error(), "template parsing error") {
		t.Errorf("lockbox version -f with a bad template: %v", err)
	}
}
