package busybox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Runc drives the runc binary with a private state directory, so that tests
// never see or disturb containers of the host or of other tests.
type Runc struct {
	Binary string // default "runc"
	Root   string // runc --root
}

// NewRunc returns a Runc whose state lives in a test temp dir. Every
// container it starts is force-deleted when the test ends.
func NewRunc(t testing.TB) *Runc {
	t.Helper()
	r := &Runc{Binary: "runc", Root: t.TempDir()}
	t.Cleanup(func() {
		entries, _ := os.ReadDir(r.Root)
		for _, e := range entries {
			if e.IsDir() {
				_ = r.cmd(context.Background(), "delete", "--force", e.Name()).Run()
			}
		}
	})
	return r
}

func (r *Runc) cmd(ctx context.Context, args ...string) *exec.Cmd {
	bin := r.Binary
	if bin == "" {
		bin = "runc"
	}
	return exec.CommandContext(ctx, bin, append([]string{"--root", r.Root}, args...)...)
}

// Run starts the bundle's container detached (runc run -d). The container's
// stdio goes to dir/<id>.log so that no pipe of the caller stays open.
func (r *Runc) Run(ctx context.Context, id string, b *Bundle) error {
	log, err := os.Create(filepath.Join(b.Dir, id+".log"))
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := r.cmd(ctx, "run", "-d", "--bundle", b.Dir, id)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, log, log
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(log.Name())
		return fmt.Errorf("runc run %s: %v: %s", id, err, out)
	}
	return nil
}

// Create creates the container without starting it (runc create), as a
// containerd shim does; Start starts it.
func (r *Runc) Create(ctx context.Context, id string, b *Bundle) error {
	log, err := os.Create(filepath.Join(b.Dir, id+".log"))
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := r.cmd(ctx, "create", "--bundle", b.Dir, id)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, log, log
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(log.Name())
		return fmt.Errorf("runc create %s: %v: %s", id, err, out)
	}
	return nil
}

// Start starts a created container.
func (r *Runc) Start(ctx context.Context, id string) error {
	if out, err := r.cmd(ctx, "start", id).CombinedOutput(); err != nil {
		return fmt.Errorf("runc start %s: %v: %s", id, err, out)
	}
	return nil
}

// Exec runs args in the container and returns its stdout and stderr.
func (r *Runc) Exec(ctx context.Context, id string, args ...string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	cmd := r.cmd(ctx, append([]string{"exec", id}, args...)...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// Pid returns the pid of the container's init process.
func (r *Runc) Pid(ctx context.Context, id string) (int, error) {
	out, err := r.cmd(ctx, "state", id).Output()
	if err != nil {
		return 0, fmt.Errorf("runc state %s: %w", id, err)
	}
	var st struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return 0, fmt.Errorf("runc state %s: %w", id, err)
	}
	return st.Pid, nil
}

// Delete force-deletes the container (kills it first if running) and
// waits until its init process has left its namespaces: runc delete
// --force sends SIGKILL to a process that is not its child and returns
// before the kernel has torn it down, and tests that look at /proc right
// after (is the container gone?) must not see it dying.
func (r *Runc) Delete(ctx context.Context, id string) error {
	pid, _ := r.Pid(ctx, id)
	if out, err := r.cmd(ctx, "delete", "--force", id).CombinedOutput(); err != nil {
		return fmt.Errorf("runc delete %s: %v: %s", id, err, out)
	}
	if pid <= 0 {
		return nil
	}
	ns := fmt.Sprintf("/proc/%d/ns/mnt", pid)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		// A zombie has no namespaces left: the stat fails as for a
		// process that is gone.
		if _, err := os.Stat(ns); err != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("runc delete %s: process %d still running: %w", id, pid, ctx.Err())
		case <-tick.C:
		}
	}
}

// Context returns a context for one container operation in a test: bounded,
// so that a stuck runc fails the test instead of hanging CI.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
