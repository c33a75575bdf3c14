//go:build linux

package bench

import (
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/integration/harness"
)

// childAgentEnv names the file a child test agent writes its socket's path
// to; set, TestChildAgent serves as that child.
const childAgentEnv = "LOCKBOX_BENCH_CHILD_AGENT_OUT"

// TestChildAgent is the in-process test agent (harness.TestAgent: the
// real tmpfs mounter and local API, fixed grants, no manager, no records,
// no exit watch) in a process of its own. Started by startChildAgent (with
// childAgentEnv set), it serves until its standard input closes. Between
// the test agent in the benchmark's process and the real "lockbox agent",
// it tells what being another process costs a claim from what the real
// agent's own work does. Run as a test, it starts such a child and checks
// that it answers on its socket and is gone once stopped, so the benchmark
// variant that relies on it is tested where benchmarks do not run.
func TestChildAgent(t *testing.T) {
	if out := os.Getenv(childAgentEnv); out != "" {
		serveChildAgent(t, out)
		return
	}
	stop, sock := startChild(t)
	conn, err := net.Dial("unixpacket", sock)
	if err != nil {
		t.Fatalf("the child test agent does not answer on %s: %v", sock, err)
	}
	conn.Close()
	stop()
	if _, err := net.Dial("unixpacket", sock); err == nil {
		t.Fatalf("the child test agent still answers on %s after it was stopped", sock)
	}
}

func serveChildAgent(t *testing.T, out string) {
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
	_, sock := startChild(b)
	return sock
}

// startChild starts the child test agent and returns a stop function (also
// run at t's cleanup; stopping twice is harmless) and its socket.
func startChild(t testing.TB) (stop func(), socket string) {
	out := filepath.Join(t.TempDir(), "socket")
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildAgent$")
	cmd.Env = append(os.Environ(), childAgentEnv+"="+out)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop = sync.OnceFunc(func() {
		stdin.Close()
		cmd.Wait()
	})
	t.Cleanup(stop)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if sock, err := os.ReadFile(out); err == nil {
			return stop, string(sock)
		}
	}
	t.Fatal("the child test agent did not start in 30 s")
	return stop, ""
}
