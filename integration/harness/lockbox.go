//go:build linux

package harness

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/agent/localapi"
)

// Proc is a lockbox daemon started by the harness.
type Proc struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan error
}

// StartProc starts bin with args as a daemon whose output goes to logPath;
// it is stopped when the test ends.
func StartProc(t testing.TB, name, logPath, bin string, args ...string) *Proc {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// No Pdeathsig: it fires when the forking OS thread exits, and the
	// attach code in this process deliberately ends locked threads.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, LogPath: logPath, cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(p.Stop)
	return p
}

// Stop ends the process (SIGTERM, then SIGKILL after 20 s) and waits for
// it. It is safe to call more than once.
func (p *Proc) Stop() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

// Exited reports whether the process has ended, with its error.
func (p *Proc) exited() (bool, error) {
	select {
	case err := <-p.done:
		p.done <- err
		return true, err
	default:
		return false, nil
	}
}

// waitFor polls cond until it holds, p exits, or the deadline passes. The
// daemons give no readiness signal other than answering, so polling their
// sockets is the condition to wait on.
func (p *Proc) waitFor(t testing.TB, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if ok, perr := p.exited(); ok {
			t.Fatalf("%s exited (%v) before %s; log:\n%s", p.Name, perr, what, tail(p.LogPath))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s after %v (%v); log:\n%s", p.Name, what, timeout, err, tail(p.LogPath))
		}
		<-tick.C
	}
}

// Manager is a "lockbox manager" on a temp data dir.
type Manager struct {
	*Proc
	Bin         string
	DataDir     string
	AdminSocket string
	Addr        string
}

// StartManager starts a single manager (embedded etcd) on a temp dir,
// listening for agents on a free loopback port.
func StartManager(t testing.TB, binDir string) *Manager {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "lbx-mgr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	m := &Manager{
		Bin:         filepath.Join(binDir, "lockbox"),
		DataDir:     filepath.Join(dir, "data"),
		AdminSocket: filepath.Join(dir, "manager.sock"),
		Addr:        freeAddr(t),
	}
	m.Proc = StartProc(t, "lockbox manager", filepath.Join(dir, "manager.log"), m.Bin,
		"manager", "--data-dir", m.DataDir, "--listen", m.Addr, "--admin-socket", m.AdminSocket)
	m.waitFor(t, "admin API", time.Minute, func() error {
		_, err := m.CLI(context.Background(), "secret", "ls", "-q")
		return err
	})
	return m
}

// CLI runs "lockbox -H unix://<admin socket> args..." and returns stdout.
func (m *Manager) CLI(ctx context.Context, args ...string) (string, error) {
	return m.CLIStdin(ctx, nil, args...)
}

// CLIStdin is CLI with data on stdin (secret create NAME -).
func (m *Manager) CLIStdin(ctx context.Context, stdin []byte, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, m.Bin, append([]string{"-H", "unix://" + m.AdminSocket}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("lockbox %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// Agent is a "lockbox agent" on a temp state dir.
type Agent struct {
	*Proc
	Socket   string
	StateDir string
}

// StartAgent joins an agent to m with a fresh worker token. extra flags
// (for instance --nri) are appended.
func StartAgent(t testing.TB, binDir string, m *Manager, extra ...string) *Agent {
	t.Helper()
	token, err := m.CLI(context.Background(), "join-token", "worker", "-q")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("/tmp", "lbx-agt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	a := &Agent{Socket: filepath.Join(dir, "run", "agent.sock"), StateDir: filepath.Join(dir, "state")}
	// As an operator does: the token in a root-only file, never in argv.
	tokenFile := filepath.Join(dir, "join-token")
	if err := os.WriteFile(tokenFile, []byte(strings.TrimSpace(token)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Several agents share this host: each joins under a name of its own
	// (the managers keep worker hostnames unique).
	args := append([]string{"agent", "--manager", m.Addr, "--token-file", tokenFile, "--hostname", filepath.Base(dir),
		"--state-dir", a.StateDir, "--socket", a.Socket}, extra...)
	a.Proc = StartProc(t, "lockbox agent", filepath.Join(dir, "agent.log"), filepath.Join(binDir, "lockbox"), args...)
	a.waitFor(t, "local API", time.Minute, func() error {
		_, err := a.List(context.Background())
		return err
	})
	return a
}

// List asks the agent which containers it holds mounts for (by ID).
func (a *Agent) List(ctx context.Context) ([]string, error) {
	c, err := localapi.Dial(a.Socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	resp, err := c.List(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, m := range resp.GetContainers() {
		ids = append(ids, m.GetId())
	}
	return ids, nil
}

// WaitUntil polls cond (for instance "a claiming container starts") until
// it holds: grants reach the agent asynchronously after a change on the
// manager.
func (a *Agent) WaitUntil(t testing.TB, what string, cond func() error) {
	t.Helper()
	a.waitFor(t, what, time.Minute, cond)
}

// freeAddr returns a loopback address whose port and the next one (the
// manager's embedded etcd peer port) are free. The ports are taken below
// the kernel's ephemeral range: a port from "listen on :0" is an
// ephemeral one, and any outgoing connection on the machine may take its
// neighbour as a source port before the manager binds it.
func freeAddr(t testing.TB) string {
	t.Helper()
	lo, _ := ephemeralRange()
	for range 200 {
		port := 10000 + rand.IntN(lo-10001)
		a, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		b, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+1))
		a.Close()
		if err != nil {
			continue
		}
		b.Close()
		return fmt.Sprintf("127.0.0.1:%d", port)
	}
	t.Fatal("no two free consecutive loopback ports below the ephemeral range")
	return ""
}

// ephemeralRange reads net.ipv4.ip_local_port_range (Linux's default when
// unreadable).
func ephemeralRange() (int, int) {
	lo, hi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &lo, &hi)
	}
	if lo <= 10001 {
		lo = 32768
	}
	return lo, hi
}
