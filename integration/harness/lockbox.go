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
	"slices"
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
	return StartProcPrefix(t, name, logPath, nil, bin, args...)
}

// StartProcPrefix is StartProc with bin run through a prefix command that
// execs it (for instance NetnsExec's nsenter, to start a daemon inside a
// network namespace): the pid is then the daemon's own, and signals reach it.
func StartProcPrefix(t testing.TB, name, logPath string, prefix []string, bin string, args ...string) *Proc {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	argv := append(append(append([]string(nil), prefix...), bin), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
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

// Pid is the daemon's process id (0 once stopped).
func (p *Proc) Pid() int {
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Kill sends SIGKILL, as in a crash (no shutdown code runs), and waits for
// the process to end.
func (p *Proc) Kill() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Kill()
	<-p.done
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

	// What Restart starts again.
	dir          string
	prefix, args []string
	starts       int
}

// StartManager starts a single manager (embedded etcd) on a temp dir,
// listening for agents on a free loopback port.
func StartManager(t testing.TB, binDir string) *Manager {
	t.Helper()
	return StartManagerWith(t, binDir, ManagerOptions{})
}

// ManagerOptions change how StartManagerWith starts a manager.
type ManagerOptions struct {
	// Prefix runs the manager through a command that execs it (NetnsExec).
	Prefix []string
	// Addr is the agents' listen address (a free loopback one when empty).
	Addr string
	// Join, when set, makes the manager join Join's cluster (--join, with a
	// single-use manager join token from Join's admin API in a root-only
	// token file) instead of bootstrapping its own.
	Join *Manager
}

// StartManagerWith is StartManager with options.
func StartManagerWith(t testing.TB, binDir string, o ManagerOptions) *Manager {
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
		Addr:        o.Addr,
	}
	if m.Addr == "" {
		m.Addr = freeAddr(t)
	}
	args := []string{"manager", "--data-dir", m.DataDir, "--listen", m.Addr, "--admin-socket", m.AdminSocket}
	if o.Join != nil {
		// As docs/operations.md "Adding and removing managers" says: the
		// token in a root-only file, never in argv.
		token, err := o.Join.CLI(context.Background(), "join-token", "manager", "-q")
		if err != nil {
			t.Fatal(err)
		}
		tokenFile := filepath.Join(dir, "manager-join-token")
		if err := os.WriteFile(tokenFile, []byte(strings.TrimSpace(token)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--join", o.Join.Addr, "--token-file", tokenFile)
	}
	m.dir, m.prefix, m.args = dir, o.Prefix, args
	m.start(t)
	return m
}

// start runs the manager with the arguments it was first given, logging
// to manager.log (manager.<n>.log after a restart), and waits for its
// admin API.
func (m *Manager) start(t testing.TB) {
	t.Helper()
	m.starts++
	log := "manager.log"
	if m.starts > 1 {
		log = fmt.Sprintf("manager.%d.log", m.starts)
	}
	m.Proc = StartProcPrefix(t, "lockbox manager", filepath.Join(m.dir, log), m.prefix, m.Bin, m.args...)
	m.waitFor(t, "admin API", time.Minute, func() error {
		_, err := m.CLI(context.Background(), "secret", "ls", "-q")
		return err
	})
}

// Restart starts a bootstrapping manager (one started without Join) again
// on the same data dir, address and flags, after Kill or Stop, and waits
// for its admin API. A joined manager's flags name a single-use token:
// restarting one is not supported here.
func (m *Manager) Restart(t testing.TB) {
	t.Helper()
	if m.Proc != nil && m.Pid() != 0 {
		t.Fatal("manager Restart: the manager still runs (Kill or Stop it first)")
	}
	if slices.Contains(m.args, "--join") {
		t.Fatal("manager Restart: a joined manager's token is single-use")
	}
	m.start(t)
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

	// What Restart starts again.
	dir, bin string
	prefix   []string
	args     []string
	starts   int
}

// StartAgent joins an agent to m with a fresh worker token. extra flags
// (for instance --nri) are appended.
func StartAgent(t testing.TB, binDir string, m *Manager, extra ...string) *Agent {
	t.Helper()
	return StartAgentWith(t, binDir, m, AgentOptions{Extra: extra})
}

// AgentOptions change how StartAgentWith starts an agent.
type AgentOptions struct {
	// Prefix runs the agent through a command that execs it (NetnsExec).
	Prefix []string
	// Extra flags are appended to the agent's.
	Extra []string
	// Managers is the agent's --manager list (m's address alone when
	// empty); the join token still comes from m.
	Managers []string
}

// StartAgentWith is StartAgent with options.
func StartAgentWith(t testing.TB, binDir string, m *Manager, o AgentOptions) *Agent {
	t.Helper()
	extra := o.Extra
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
	managers := m.Addr
	if len(o.Managers) > 0 {
		managers = strings.Join(o.Managers, ",")
	}
	args := append([]string{"agent", "--manager", managers, "--token-file", tokenFile, "--hostname", filepath.Base(dir),
		"--state-dir", a.StateDir, "--socket", a.Socket}, extra...)
	a.dir, a.bin, a.prefix, a.args = dir, AgentBinary(binDir), o.Prefix, args
	a.start(t)
	return a
}

// AgentBinary is the lockbox a node runs in binDir (a build's bin/): its
// node build, node/lockbox (cmd/lockbox/node), which make build makes
// beside the full one; binDir/lockbox for builds made before it had one,
// as a benchmark's build to compare with may be.
func AgentBinary(binDir string) string {
	node := filepath.Join(binDir, "node", "lockbox")
	if _, err := os.Stat(node); err == nil {
		return node
	}
	return filepath.Join(binDir, "lockbox")
}

// start runs the agent with the arguments it was first given, logging to
// agent.log (agent.<n>.log after a restart), and waits for its local API.
func (a *Agent) start(t testing.TB) {
	t.Helper()
	a.starts++
	log := "agent.log"
	if a.starts > 1 {
		log = fmt.Sprintf("agent.%d.log", a.starts)
	}
	a.Proc = StartProcPrefix(t, "lockbox agent", filepath.Join(a.dir, log), a.prefix, a.bin, a.args...)
	a.waitFor(t, "local API", time.Minute, func() error {
		_, err := a.List(context.Background())
		return err
	})
}

// Restart starts the agent again on the same state dir, socket and flags
// (after Kill or Stop), and waits for its local API.
func (a *Agent) Restart(t testing.TB) {
	t.Helper()
	if a.Proc != nil && a.Pid() != 0 {
		t.Fatal("agent Restart: the agent still runs (Kill or Stop it first)")
	}
	a.start(t)
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

// releaseWait bounds how long a check waits for the agent to have served
// a release it was sent but not asked to answer.
const releaseWait = 30 * time.Second

// ListReleased is List once the agent holds nothing, or what it still
// holds after releaseWait: the shim's release at Delete is written to the
// agent, not waited for (plugin/shim), so right after a delete the agent
// may not have served it yet. For checks that nothing is left.
func (a *Agent) ListReleased(ctx context.Context) ([]string, error) {
	deadline := time.Now().Add(releaseWait)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ids, err := a.List(ctx)
		if (err == nil && len(ids) == 0) || time.Now().After(deadline) {
			return ids, err
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ids, err
		}
	}
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
	return FreeAddrOn(t, "127.0.0.1")
}

// FreeAddrOn is freeAddr on another local address (127.0.0.2, ...: each
// manager of a cluster on a loopback address of its own).
func FreeAddrOn(t testing.TB, ip string) string {
	t.Helper()
	lo, _ := ephemeralRange()
	for range 200 {
		port := 10000 + rand.IntN(lo-10001)
		a, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
		if err != nil {
			continue
		}
		b, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port+1)))
		a.Close()
		if err != nil {
			continue
		}
		b.Close()
		return net.JoinHostPort(ip, fmt.Sprint(port))
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
