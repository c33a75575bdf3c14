//go:build linux

package hotpath

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lockbox-project/lockbox/api/claim"
	"github.com/lockbox-project/lockbox/plugin/runtime/agentconn"
)

// DialAgent is the Dialer of lockbox-runtime: agentconn.Dial.
func DialAgent(socket string, timeout time.Duration) (Agent, error) {
	c, err := agentconn.Dial(socket, timeout)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Mode is how a claiming container gets its secrets on "create".
type Mode int

const (
	// AttachAfterCreate runs the real "runc create", then has the agent
	// attach into the new container's mount namespace by its pid, before
	// "runc start" lets the container's process run. It is the default: see
	// docs/containerd.md for the measurements behind the choice.
	AttachAfterCreate Mode = iota
	// AttachInHook adds a createContainer hook (this binary, "hook
	// createContainer") to config.json; runc runs it in the container's
	// mount namespace before pivot_root and the hook attaches the mount fd
	// the agent sends. "runc run" always uses it: there is no moment between
	// create and start to attach in.
	AttachInHook
)

// Wrapper is lockbox-runtime's logic. Its zero value is not usable: set
// Runc, Socket and Dial.
type Wrapper struct {
	// Runc is the real runc (or crun) binary.
	Runc string
	// Socket is the agent's local API socket.
	Socket string
	Dial   Dialer
	Mode   Mode
	// HookPath is the executable run as the OCI hook in AttachInHook mode
	// (normally this binary).
	HookPath string
	// HookEnv is added to the hooks' environment, which the runtime builds
	// from the spec alone (LOCKBOX_AGENT_SOCKET is always there).
	HookEnv []string
	// Timeout bounds each agent call; zero means 30 s.
	Timeout time.Duration
	// Stderr receives error messages; nil means os.Stderr.
	Stderr io.Writer
	// Exec replaces the process with runc; nil means syscall.Exec. Tests
	// set it to observe passthrough without leaving the test binary.
	Exec func(argv0 string, argv, env []string) error
}

// Main runs one invocation and returns the process exit code. For every
// call the wrapper does not act on, it does not return: the process becomes
// runc.
func (w *Wrapper) Main(args []string) int {
	inv, err := Parse(args)
	if err != nil {
		// The wrapper only understands part of runc's CLI; whatever it
		// cannot parse, runc judges. Commands that matter (create, run,
		// delete) with broken arguments fail in runc as well.
		return w.passthrough(args)
	}
	switch inv.Command {
	case "create", "run":
		return w.create(inv)
	case "delete":
		w.release(inv)
		return w.passthrough(args)
	default:
		return w.passthrough(args)
	}
}

func (w *Wrapper) passthrough(args []string) int {
	exec := w.Exec
	if exec == nil {
		exec = syscall.Exec
	}
	argv := append([]string{w.Runc}, args...)
	err := exec(w.Runc, argv, os.Environ())
	// Exec only returns on failure (or in tests).
	if err != nil {
		w.report(nil, fmt.Sprintf("lockbox-runtime: exec %s: %v", w.Runc, err))
		return 127
	}
	return 0
}

func (w *Wrapper) create(inv *Invocation) int {
	bundle := inv.Bundle
	if bundle == "" {
		bundle = "."
	}
	claim, err := ReadClaim(bundle)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			// No readable config.json: runc reports that better than we can.
			return w.passthrough(inv.Args)
		}
		w.report(inv, fmt.Sprintf("lockbox: container %s: %v", inv.ID, err))
		return 1
	}
	if claim == nil {
		return w.passthrough(inv.Args)
	}
	// The claim rules' containerd namespace: the runc shim's --root ends
	// in it (NamespaceFromRuncRoot).
	claim.Facts.ContainerdNamespace = NamespaceFromRuncRoot(inv.Root)
	if inv.Command == "run" || w.Mode == AttachInHook {
		// The hook runs before pivot_root, while the root is still
		// writable, and makes the mountpoints itself.
		claim.AddHooks(w.HookPath, append([]string{"LOCKBOX_AGENT_SOCKET=" + w.Socket}, w.HookEnv...))
		if err := claim.WriteSpec(); err != nil {
			w.report(inv, fmt.Sprintf("lockbox: container %s claims service %q: %v", inv.ID, claim.Service, err))
			return 1
		}
		return w.passthrough(inv.Args)
	}
	// Connect first: a node whose agent is down fails the create before
	// runc builds a container only to take it back, and the connection is
	// ready when runc returns.
	a, err := w.Dial(w.Socket, w.timeout())
	if err != nil {
		w.report(inv, fmt.Sprintf("lockbox: container %s claims service %q: lockbox agent not reachable: %v", inv.ID, claim.Service, err))
		return 1
	}
	defer a.Close()
	if claim.NeedsMountpoints() {
		// After the create the agent cannot make the mountpoints: runc
		// must. A claim the agent could not serve fails here, before runc
		// builds anything.
		if err := w.addMountpoints(inv, claim, a); err != nil {
			w.report(inv, fmt.Sprintf("lockbox: container %s claims service %q: %v", inv.ID, claim.Service, err))
			return 1
		}
	}
	if code := w.runRunc(inv, inv.Args); code != 0 {
		// runc has reported why, in its log and on stderr.
		return code
	}
	if err := w.attach(inv, claim, a); err != nil {
		w.report(inv, fmt.Sprintf("lockbox: container %s claims service %q: %v", inv.ID, claim.Service, err))
		// Fail closed: a container that was promised secrets must not run
		// without them. Take back what runc created.
		del := append(append([]string{}, inv.Globals...), "delete", "--force", inv.ID)
		w.runRunc(inv, del)
		return 1
	}
	return 0
}

// addMountpoints asks the agent for the claim's targets and adds a
// mountpoint bind for each to config.json.
func (w *Wrapper) addMountpoints(inv *Invocation, claim *Claim, a Agent) error {
	targets, err := a.Targets(claim.Container(inv.ID, 0, ""))
	if err != nil {
		return err
	}
	if len(targets) == 0 {
		return nil
	}
	if err := claim.AddMountpoints(targets); err != nil {
		return err
	}
	return claim.WriteSpec()
}

func (w *Wrapper) attach(inv *Invocation, claim *Claim, a Agent) error {
	pid, err := w.containerPid(inv)
	if err != nil {
		return err
	}
	mounts, files, err := a.Prepare(claim.Container(inv.ID, pid, "/"), true)
	for _, f := range files {
		// The agent attached itself; an fd here is unexpected and not ours
		// to keep.
		f.Close()
	}
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if !m.Attached() {
			return fmt.Errorf("agent left mount %s for the caller to attach", m.Target)
		}
	}
	return nil
}

// containerPid reads the container's init pid from --pid-file, or asks
// runc when the caller passed none.
func (w *Wrapper) containerPid(inv *Invocation) (int, error) {
	if inv.PidFile != "" {
		b, err := os.ReadFile(inv.PidFile)
		if err != nil {
			return 0, fmt.Errorf("container pid: %w", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			return 0, fmt.Errorf("container pid file %s: bad content", inv.PidFile)
		}
		return pid, nil
	}
	args := append(append([]string{}, inv.Globals...), "state", inv.ID)
	out, err := exec.Command(w.Runc, args...).Output()
	if err != nil {
		return 0, fmt.Errorf("runc state %s: %w", inv.ID, err)
	}
	return parseStatePid(out)
}

// release has the agent wipe the container's secrets, before runc deletes
// the container: once the delete returns, containerd may reuse the ID, and
// a release still in flight could then wipe the newer container's secrets.
// (Running the release beside a runc delete child instead was measured: on
// two cores the agent's wipe and runc compete for the CPU and the delete
// got no faster; docs/containerd.md, "Cost".) A delete must never be
// blocked by Lockbox: failures are logged and runc proceeds.
func (w *Wrapper) release(inv *Invocation) {
	// No socket: no agent on this node, or not started yet; there is nothing
	// it could hold for this container.
	if _, err := os.Stat(w.Socket); err != nil {
		return
	}
	claims, proc := mayClaim(inv)
	if !claims {
		return
	}
	a, err := w.Dial(w.Socket, w.timeout())
	if err != nil {
		w.log(inv, "warning", fmt.Sprintf("lockbox: release %s: %v", inv.ID, err))
		return
	}
	defer a.Close()
	// Release returns once the agent has wiped the mount: only then may
	// runc delete the container and its ID be used again. The process
	// runc's state names binds the release to this container: the agent
	// leaves alone a running container of another containerd namespace
	// that holds the same ID.
	if err := a.Release(inv.ID, proc); err != nil {
		w.log(inv, "warning", fmt.Sprintf("lockbox: release %s: %v", inv.ID, err))
	}
}

// mayClaim reports whether the container being deleted may hold secrets,
// and its init process as runc's state records it (zero if unknown).
// runc keeps the spec's annotations as "key=value" labels in
// <root>/<id>/state.json; when that file says the container claimed
// nothing, the agent round trip is skipped. So it is when runc has no state
// for the ID at all: the shim deletes each container twice (the second time
// from its cleanup), and the first delete of a claiming container has
// already released it. Anything else (another runtime's state layout, no
// --root, an unreadable file) answers yes: a needless Release costs little,
// a missed one leaves secrets held.
func mayClaim(inv *Invocation) (bool, agentconn.Process) {
	if inv.Root == "" || strings.ContainsRune(inv.ID, '/') {
		return true, agentconn.Process{}
	}
	b, err := os.ReadFile(filepath.Join(inv.Root, inv.ID, "state.json"))
	if err != nil {
		if _, derr := os.Stat(filepath.Join(inv.Root, inv.ID)); errors.Is(derr, fs.ErrNotExist) {
			if _, rerr := os.Stat(inv.Root); rerr == nil {
				return false, agentconn.Process{}
			}
		}
		return true, agentconn.Process{}
	}
	if !bytes.Contains(b, runcLabel) {
		return false, agentconn.Process{}
	}
	pid, _ := stateNumber(b, `"init_process_pid":`)
	start, _ := stateNumber(b, `"init_process_start":`)
	if pid <= 0 || pid > 1<<31-1 {
		return true, agentconn.Process{}
	}
	return true, agentconn.Process{Pid: int(pid), Start: start}
}

// stateNumber reads the unsigned number after key in runc's state.json
// (runc writes it compactly, and these keys only at the top level); false
// when it is not there. A full JSON decode would cost the delete path more
// than it reads.
func stateNumber(b []byte, key string) (uint64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	rest := b[i+len(key):]
	var v uint64
	n := 0
	for ; n < len(rest) && n < 20 && rest[n] >= '0' && rest[n] <= '9'; n++ {
		v = v*10 + uint64(rest[n]-'0')
	}
	if n == 0 || n == 20 {
		return 0, false
	}
	return v, true
}

var runcLabel = []byte(`"` + claim.ServiceAnnotation + `=`)

// runRunc runs runc with args as a child, sharing stdio and the fds runc is
// told to pass on, and returns its exit code.
func (w *Wrapper) runRunc(inv *Invocation, args []string) int {
	nfds := 3 + inv.PreserveFDs
	if n, err := strconv.Atoi(os.Getenv("LISTEN_FDS")); err == nil && n > 0 {
		nfds += n
	}
	files := make([]uintptr, nfds)
	for i := range files {
		files[i] = uintptr(i)
	}
	argv := append([]string{w.Runc}, args...)
	pid, err := syscall.ForkExec(w.Runc, argv, &syscall.ProcAttr{Env: os.Environ(), Files: files})
	if err != nil {
		w.report(inv, fmt.Sprintf("lockbox-runtime: run %s: %v", w.Runc, err))
		return 127
	}
	var ws syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		w.report(inv, fmt.Sprintf("lockbox-runtime: wait for %s: %v", w.Runc, err))
		return 1
	}
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return 1
}

func (w *Wrapper) timeout() time.Duration {
	if w.Timeout > 0 {
		return w.Timeout
	}
	return 30 * time.Second
}

// report writes an error where runc's callers look for it: stderr, and the
// --log file in runc's format (containerd's shim reads the last error line
// of that file into the error it returns to the client).
func (w *Wrapper) report(inv *Invocation, msg string) {
	stderr := w.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	fmt.Fprintln(stderr, msg)
	w.log(inv, "error", msg)
}

func (w *Wrapper) log(inv *Invocation, level, msg string) {
	if inv == nil || inv.Log == "" {
		return
	}
	f, err := os.OpenFile(inv.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	f.Write(formatLog(inv.LogFormat, level, msg, time.Now()))
}

// LookRunc finds the real runc: LOCKBOX_RUNC, else "runc" on PATH. It
// refuses to return self, which would loop when lockbox-runtime is
// installed under the name runc.
func LookRunc(getenv func(string) string, self string) (string, error) {
	name := getenv("LOCKBOX_RUNC")
	if name == "" {
		name = "runc"
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("real runc not found (set LOCKBOX_RUNC): %w", err)
	}
	if self != "" {
		a, err1 := os.Stat(p)
		b, err2 := os.Stat(self)
		if err1 == nil && err2 == nil && os.SameFile(a, b) {
			return "", fmt.Errorf("%s is lockbox-runtime itself; set LOCKBOX_RUNC to the real runc", p)
		}
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return abs, nil
}
