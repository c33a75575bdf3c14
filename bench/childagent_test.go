//go:build linux

package bench

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/integration/harness"
)

// childAgentEnv names the file a child test agent writes its socket's path
// to; set, TestChildAgent serves instead of skipping.
const childAgentEnv = "LOCKBOX_BENCH_CHILD_AGENT_OUT"

// TestChildAgent is the in-process test agent (harness.TestAgent: the
// real tmpfs mounter and local API, fixed grants, no manager, no records,
// no exit watch) in a process of its own: started by startChildAgent, it
// serves until its standard input closes. Between the test agent in the
// benchmark's process and the real "lockbox agent", it tells what being
// another process costs a claim from what the real agent's own work does.
func TestChildAgent(t *testing.T) {
	out := os.Getenv(childAgentEnv)
	if out == "" {
		t.Skip("the shim benchmarks start it (LOCKBOX_BENCH_CHILD_AGENT)")
	}
	grants, secrets := tenSecrets()
	a := harness.StartTestAgent(t, grants, secrets)
	if err := os.WriteFile(out+".tmp", []byte(a.Socket), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, os.Stdin)
}

// startChildAgent runs TestChildAgent in a child process and returns its
// socket; the child stops at the benchmark's cleanup.
func startChildAgent(b *testing.B) string {
	out := filepath.Join(b.TempDir(), "socket")
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildAgent$")
	cmd.Env = append(os.Environ(), childAgentEnv+"="+out)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if sock, err := os.ReadFile(out); err == nil {
			return string(sock)
		}
	}
	b.Fatal("the child test agent did not start in 30 s")
	return ""
}
