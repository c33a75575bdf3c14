package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/cmd/lockbox/internal/daemonflags"
)

// lockboxBin returns $LOCKBOX_BIN/lockbox, or builds this command: the
// tests below look at a real daemon's /proc entries.
func lockboxBin(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("LOCKBOX_BIN"); dir != "" {
		return filepath.Join(dir, "lockbox")
	}
	bin := filepath.Join(t.TempDir(), "lockbox")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build lockbox: %v\n%s", err, out)
	}
	return bin
}

func freeTCPPort(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// cleanEnv is the test's environment without a join token in it.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, daemonflags.JoinTokenEnv+"=") {
			env = append(env, kv)
		}
	}
	return env
}

// proc is a lockbox daemon started by a test.
type proc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	exited chan struct{}
}

func startDaemon(t *testing.T, bin string, stdin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = cleanEnv()
	d := &proc{cmd: cmd, stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	cmd.Stderr = &lockedWriter{w: d.stderr}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", args[0], d.stderr)
		}
	})
	return d
}

// waitFor polls cond until it holds, the daemon exits, or a minute passes.
func (d *proc) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(time.Minute)
	for !cond() {
		select {
		case <-d.exited:
			t.Fatalf("daemon exited before %s: %v", what, d.cmd.ProcessState)
		case <-deadline:
			t.Fatalf("no %s after a minute", what)
		case <-tick.C:
		}
	}
}

// assertNotInProc checks that the running daemon's argv and environment
// do not hold the token.
func (d *proc) assertNotInProc(t *testing.T, token string) {
	t.Helper()
	pid := d.cmd.Process.Pid
	for _, f := range []string{"cmdline", "environ"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			t.Fatalf("/proc/%d/%s is empty: not the running daemon", pid, f)
		}
		if bytes.Contains(b, []byte(token)) {
			t.Errorf("/proc/%d/%s holds the join token", pid, f)
		}
		secret := token[strings.LastIndexByte(token, '-')+1:]
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("/proc/%d/%s holds the token's secret", pid, f)
		}
	}
}

type testManagerProc struct {
	*proc
	addr, sock string
}

func startManagerProc(t *testing.T, bin, ip string, stdin string, extra ...string) *testManagerProc {
	t.Helper()
	dir := t.TempDir()
	m := &testManagerProc{addr: net.JoinHostPort(ip, freeTCPPort(t, ip)), sock: filepath.Join(dir, "manager.sock")}
	args := append([]string{"manager", "--data-dir", filepath.Join(dir, "data"), "--listen", m.addr,
		"--etcd-peer-port", freeTCPPort(t, ip), "--admin-socket", m.sock}, extra...)
	m.proc = startDaemon(t, bin, stdin, args...)
	m.waitFor(t, "admin API", func() bool {
		_, err := m.cli(t, bin, "secret", "ls", "-q")
		return err == nil
	})
	return m
}

func (m *testManagerProc) cli(t *testing.T, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-H", "unix://" + m.sock}, args...)...).Output()
	return string(out), err
}

// TestDaemonsTakeTheTokenFromAFileOrStdin starts real daemons that join
// with --token-file, from a file and from stdin, and reads their
// /proc/PID/cmdline and /proc/PID/environ: the token is in neither.
func TestDaemonsTakeTheTokenFromAFileOrStdin(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the agent runs as root")
	}
	bin := lockboxBin(t)
	m := startManagerProc(t, bin, "127.0.0.1", "")
	token := func(t *testing.T, role string) string {
		out, err := m.cli(t, bin, "join-token", "-q", role)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	// tokenArg returns the --token-file argument and the daemon's stdin.
	tokenArg := func(t *testing.T, how, tok string) (arg, stdin string) {
		if how == "stdin" {
			return "-", tok + "\n"
		}
		arg = filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(arg, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return arg, ""
	}
	for _, how := range []string{"file", "stdin"} {
		t.Run("agent from "+how, func(t *testing.T) {
			tok := token(t, "worker")
			arg, stdin := tokenArg(t, how, tok)
			dir := t.TempDir()
			state := filepath.Join(dir, "state")
			a := startDaemon(t, bin, stdin, "agent", "--manager", m.addr, "--token-file", arg, "--hostname", "agent-from-"+how,
				"--state-dir", state, "--socket", filepath.Join(dir, "agent.sock"))
			a.waitFor(t, "node certificate", func() bool {
				_, err := os.Stat(filepath.Join(state, "node.crt"))
				return err == nil
			})
			a.assertNotInProc(t, tok)
		})
	}
	// Joined managers become etcd voters: they run until the test ends
	// (one stopped early would take the cluster's quorum with it), so
	// they are not subtests.
	for i, how := range []string{"stdin", "file"} {
		tok := token(t, "manager")
		arg, stdin := tokenArg(t, how, tok)
		m2 := startManagerProc(t, bin, fmt.Sprintf("127.0.0.%d", i+2), stdin, "--join", m.addr, "--token-file", arg)
		m2.assertNotInProc(t, tok)
	}
}

// TestRetiredTokenWaysFail: --token and LOCKBOX_JOIN_TOKEN make both
// daemons exit at once with a message that says to use --token-file.
func TestRetiredTokenWaysFail(t *testing.T) {
	bin := lockboxBin(t)
	const tok = "LBXTKN-1-0000000000000000000000000000000000000000000000000000000000000000-secretsecret"
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	agent := []string{"agent", "--manager", "127.0.0.1:1", "--state-dir", filepath.Join(dir, "state"), "--socket", filepath.Join(dir, "a.sock")}
	manager := []string{"manager", "--data-dir", filepath.Join(dir, "data"), "--admin-socket", filepath.Join(dir, "m.sock"), "--join", "127.0.0.1:1"}
	tests := []struct {
		name string
		args []string
		env  bool
		want []string
	}{
		{"agent --token", append(agent, "--token", tok), false, []string{"--token is no longer accepted", "--token-file"}},
		{"agent --token=", append(agent, "--token="+tok), false, []string{"--token is no longer accepted", "--token-file"}},
		{"manager --token", append(manager, "--token", tok), false, []string{"--token is no longer accepted", "--token-file"}},
		{"agent LOCKBOX_JOIN_TOKEN", append(agent, "--token-file", tokenFile), true, []string{daemonflags.JoinTokenEnv, "--token-file"}},
		{"manager LOCKBOX_JOIN_TOKEN", append(manager, "--token-file", tokenFile), true, []string{daemonflags.JoinTokenEnv, "--token-file"}},
		{"agent LOCKBOX_JOIN_TOKEN alone", agent, true, []string{daemonflags.JoinTokenEnv, "--token-file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tt.args...)
			cmd.Env = cleanEnv()
			if tt.env {
				cmd.Env = append(cmd.Env, daemonflags.JoinTokenEnv+"="+tok)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("exit: %v; want a non-zero exit", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr %q does not say %q", stderr.String(), w)
				}
			}
			if strings.Contains(stderr.String(), "secretsecret") {
				t.Error("the error repeats the token")
			}
			if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
				t.Error("the agent started before refusing")
			}
		})
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
