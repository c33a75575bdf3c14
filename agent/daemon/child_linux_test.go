package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/agent/localapi"
	api "github.com/lockbox-project/lockbox/api/agent"
)

// childEnv carries the Options of an agent run by the test binary itself in
// a child process (see TestMain), so that memory and RSS are measured in a
// process that is only the agent, and so it can be killed for real.
const childEnv = "LOCKBOX_DAEMON_TEST_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	if os.Getenv(reexecChildEnv) != "" {
		os.Exit(runReexecChild())
	}
	os.Exit(m.Run())
}

type childSpec struct {
	// Binary, if set, is a lockbox binary run as "lockbox agent"; else the
	// test binary runs the agent.
	Binary   string `json:"-"`
	Managers []string
	Token    string
	StateDir string
	Socket   string
	LogFile  string
	NRI      bool
	NRISock  string
	// MetricsAddr is --metrics-addr.
	MetricsAddr string
}

func runChild(spec string) int {
	var s childSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	logf, err := os.OpenFile(s.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ready := make(chan struct{})
	go func() {
		<-ready
		fmt.Println("ready")
	}()
	err = Run(ctx, Options{Managers: s.Managers, Token: []byte(s.Token), StateDir: s.StateDir, Socket: s.Socket, NRI: s.NRI, NRISocket: s.NRISock, MetricsAddr: s.MetricsAddr,
		Log: slog.New(slog.NewTextHandler(logf, nil)), Ready: ready})
	if err != nil {
		fmt.Fprintln(logf, "agent:", err)
		return 1
	}
	return 0
}

// child is an agent process.
type child struct {
	t      testing.TB
	cmd    *exec.Cmd
	spec   childSpec
	exited chan error
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// startChild runs an agent in a child process and waits until it serves.
func startChild(t testing.TB, spec childSpec) *child {
	t.Helper()
	b, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// As "lockbox agent" does by re-executing itself.
	cmd.Env = append(os.Environ(), childEnv+"="+string(b), "GODEBUG=clobberfree=1,asyncpreemptoff=1")
	if spec.Binary != "" {
		args := []string{"agent", "--manager", strings.Join(spec.Managers, ","), "--state-dir", spec.StateDir, "--socket", spec.Socket}
		if spec.Token != "" {
			// As an operator does: the token in a file, never in argv.
			tokenFile := filepath.Join(filepath.Dir(spec.LogFile), "join-token")
			if err := os.WriteFile(tokenFile, []byte(spec.Token+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			args = append(args, "--token-file", tokenFile)
		}
		if spec.MetricsAddr != "" {
			args = append(args, "--metrics-addr", spec.MetricsAddr)
		}
		cmd = exec.Command(spec.Binary, args...)
		cmd.Env = os.Environ()
		logf, err := os.Create(spec.LogFile)
		if err != nil {
			t.Fatal(err)
		}
		defer logf.Close()
		cmd.Stderr = logf
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, cmd: cmd, spec: spec, exited: make(chan error, 1)}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case line <- sc.Text():
			default:
			}
		}
		c.exited <- cmd.Wait()
	}()
	t.Cleanup(func() { c.stop() })
	if spec.Binary != "" {
		waitUntil(t, "the agent socket", func() bool {
			select {
			case err := <-c.exited:
				c.exited <- err
				logs, _ := os.ReadFile(spec.LogFile)
				t.Fatalf("lockbox agent exited: %v\n%s", err, logs)
			default:
			}
			// The socket file appears at bind, before listen: only a
			// connection tells that the agent answers.
			cl, err := localapi.Dial(spec.Socket)
			if err != nil {
				return false
			}
			cl.Close()
			return true
		})
		return c
	}
	select {
	case l := <-line:
		if l != "ready" {
			t.Fatalf("agent child said %q", l)
		}
	case err := <-c.exited:
		c.exited <- err
		logs, _ := os.ReadFile(spec.LogFile)
		t.Fatalf("agent child exited: %v\n%s", err, logs)
	case <-time.After(60 * time.Second):
		t.Fatal("agent child not ready after 60s")
	}
	return c
}

// stop ends the child with SIGTERM (a clean shutdown).
func (c *child) stop() {
	if c.cmd.ProcessState != nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
}

// kill ends the child with SIGKILL: no cleanup at all.
func (c *child) kill() {
	c.cmd.Process.Kill()
	<-c.exited
}

func (c *child) client(t testing.TB) *localapi.Client {
	t.Helper()
	cl, err := localapi.Dial(c.spec.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// waitUntil re-checks cond across processes, where no channel can tell
// the test that the agent has applied a message.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// granted reports whether the agent would mount service.
func granted(t testing.TB, cl *localapi.Client, service string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// attach=false with a rootfs: the agent builds the tmpfs and hands it
	// over; nothing is attached anywhere.
	_, files, err := cl.Prepare(ctx, &api.PrepareRequest{Container: &api.Container{Id: "probe", Service: service, Rootfs: "/nonexistent"}})
	for _, f := range files {
		f.Close()
	}
	if err == nil {
		if err := cl.Release(ctx, "probe"); err != nil {
			t.Fatal(err)
		}
		return true
	}
	if !localapi.IsCode(err, api.Error_NOT_GRANTED) {
		t.Fatalf("prepare probe: %v", err)
	}
	return false
}

// scanMemory counts the occurrences of each marker in the writable
// mappings of pid.
func scanMemory(t testing.TB, pid int, markers ...[]byte) []int {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	counts := make([]int, len(markers))
	scanned := 0
	for _, line := range strings.Split(strings.TrimSpace(string(maps)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[1][1] != 'w' {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		buf := make([]byte, end-start)
		n, err := mem.ReadAt(buf, int64(start))
		if err != nil && !errors.Is(err, io.EOF) && n == 0 {
			continue // e.g. [vvar]: not readable, not ours
		}
		scanned += n
		for i, m := range markers {
			counts[i] += bytes.Count(buf[:n], m)
		}
	}
	if scanned == 0 {
		t.Fatal("no writable memory scanned")
	}
	return counts
}

// markerLocations lists where in pid's writable memory each marker is: its
// address, its offset in the page, and the mapping.
func markerLocations(t testing.TB, pid int, markers ...[]byte) []string {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	var where []string
	for _, line := range strings.Split(strings.TrimSpace(string(maps)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[1][1] != 'w' {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		buf := make([]byte, end-start)
		n, err := mem.ReadAt(buf, int64(start))
		if err != nil && !errors.Is(err, io.EOF) && n == 0 {
			continue
		}
		for i, m := range markers {
			for off := 0; ; {
				j := bytes.Index(buf[off:n], m)
				if j < 0 {
					break
				}
				addr := start + uint64(off+j)
				where = append(where, fmt.Sprintf("marker %d at %#x (page offset %#x) in %s", i, addr, addr&0xfff, line))
				off += j + 1
			}
		}
	}
	return where
}

func childSpecIn(t testing.TB, dir string, managers []string, token string) childSpec {
	return childSpec{Managers: managers, Token: token, StateDir: filepath.Join(dir, "state"),
		Socket: filepath.Join(dir, "run", "agent.sock"), LogFile: filepath.Join(dir, "agent.log")}
}
