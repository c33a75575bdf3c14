package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/agent/localapi"
	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/plugin/runtime/agentconn"
)

// observedOps is a local API observer that passes on each request it is
// told of: "op result".
type observedOps chan string

func (o observedOps) ObserveRequest(op, result string, _ time.Duration) { o <- op + " " + result }

// serveObserved serves a on a socket and returns it with the requests the
// server has finished with, in order.
func serveObserved(t *testing.T, a *Agent) (string, observedOps) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := localapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(observedOps, 16)
	srv := localapi.NewServer(a, testLog(t))
	srv.SetObserver(seen)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock, seen
}

// next waits for the server to finish with one more request.
func (o observedOps) next(t *testing.T) string {
	t.Helper()
	select {
	case s := <-o:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("the agent served no request in 10 s")
		return ""
	}
}

// A release that asks for no answer, whose caller closes the connection
// right after writing it (the shim's at Delete), still wipes: the agent
// reads a datagram written before the close.
func TestNoReplyReleaseWipesAfterTheCallerClosed(t *testing.T) {
	tests := []struct {
		name string
		// ended: the holder is deleted before the release (the shim's
		// case: its release names no process).
		ended bool
	}{
		{"holder ended, release naming nothing", true},
		{"holder running, release naming its process", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			state := t.TempDir()
			a := newAgent(t, state, newCache(t))
			defer a.Close()
			sock, seen := serveObserved(t, a)
			ctx := context.Background()
			ns := busybox.NewRunc(t)
			pid := runContainer(t, ns, "c1")
			if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "c1", Service: "web", Pid: int32(pid)}}); err != nil {
				t.Fatal(err)
			}
			secret, err := os.Open(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", pid))
			if err != nil {
				t.Fatal(err)
			}
			defer secret.Close()
			var p agentconn.Process
			if tc.ended {
				if err := ns.Delete(busybox.Context(t), "c1"); err != nil {
					t.Fatal(err)
				}
			} else {
				start, err := pidStart(pid)
				if err != nil {
					t.Fatal(err)
				}
				p = agentconn.Process{Pid: pid, Start: start}
			}
			conn, err := agentconn.Dial(sock, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if err := conn.SendRelease("c1", p); err != nil {
				t.Fatal(err)
			}
			conn.Close()
			if got := seen.next(t); got != "release OK" {
				t.Fatalf("the agent served %q, want release OK", got)
			}
			a.wiping.wait()
			buf := make([]byte, 16)
			if n, _ := secret.ReadAt(buf, 0); n != 0 {
				t.Errorf("the secret reads %q after the release", buf[:n])
			}
			if l, _ := a.List(ctx); len(l.GetContainers()) != 0 {
				t.Errorf("the agent still holds %v", l.GetContainers())
			}
			if _, err := os.Stat(filepath.Join(state, "containers", "c1.json")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("record left after the release: %v", err)
			}
		})
	}
}

// A release that asks for no answer is never taken to come from inside a
// container: its caller may be gone when the agent reads it, and the pid
// SO_PEERCRED took at connect may by then be another process's, one in
// the running holder's mount namespace. Here the caller itself moves into
// the holder's namespace before it writes, closes the connection and
// stays there until the agent has served the release (what a pid reused
// by a process in the holder shows the agent): before no_reply releases
// were judged by what they carry alone, the agent read the holder's
// namespace at /proc/<pid>/ns/mnt and wiped the running holder.
func TestNoReplyReleaseIsNotTakenFromTheCallersNamespace(t *testing.T) {
	a := newAgent(t, t.TempDir(), newCache(t))
	defer a.Close()
	sock, seen := serveObserved(t, a)
	ctx := context.Background()
	ns := busybox.NewRunc(t)
	pid := runContainer(t, ns, "web")
	if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "web", Service: "web", Pid: int32(pid)}}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), releaseFromEnv+"="+strconv.Itoa(pid)+","+sock+",web", releaseNoReplyEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	stay, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	got := seen.next(t)
	a.wiping.wait()
	stay.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("release from the holder's namespace: %v: %s", err, out.Bytes())
	}
	if got != "release OK" {
		t.Fatalf("the agent served %q, want release OK", got)
	}
	if got, err := catIn(t, ns, "web", "/run/secrets/db_pw"); err != nil || got != "hunter2" {
		t.Fatalf("after an unanswered release from its namespace the running holder reads %q, %v", got, err)
	}
	if l, _ := a.List(ctx); len(l.GetContainers()) != 1 {
		t.Errorf("the agent holds %v, want the running holder", l.GetContainers())
	}
	// The same release waiting for its answer is the holder's OCI hook,
	// and wipes (TestReleaseOfSameIDInAnotherNamespace).
	if err := releaseFrom(t, sock, pid, "web"); err != nil {
		t.Fatal(err)
	}
	if got := seen.next(t); got != "release OK" {
		t.Fatalf("the agent served %q, want release OK", got)
	}
	if l, _ := a.List(ctx); len(l.GetContainers()) != 0 {
		t.Errorf("the holder's own answered release left %v", l.GetContainers())
	}
}
