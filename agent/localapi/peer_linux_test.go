package localapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/internal/testutil/pidreuse"
)

// sendAndExitEnv makes the test binary a caller that sends a List and
// exits without waiting for the answer (see TestMain): a hook killed
// mid-request.
const sendAndExitEnv = "LOCKBOX_LOCALAPI_TEST_SEND_AND_EXIT"

func runSendAndExit(sock string) int {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return 1
	}
	if err := send(c, &agent.Request{Op: &agent.Request_List{List: &agent.ListRequest{}}}, nil); err != nil {
		fmt.Fprintln(os.Stderr, "send:", err)
		return 1
	}
	return 0
}

// peerHandler hands each List's peer to the test and answers only when
// the test lets it.
type peerHandler struct {
	fakeHandler
	peers chan Peer
	goOn  chan struct{}
}

func (h *peerHandler) List(ctx context.Context) (*agent.ListResponse, error) {
	p, _ := PeerFromContext(ctx)
	h.peers <- p
	<-h.goOn
	return &agent.ListResponse{}, nil
}

// TestPeerAlive: the server pins the process that connected, so a handler
// that reads /proc/<peer pid> can tell, after the read, whether it read
// its caller. The attack: a caller sends its request and exits (a hook
// killed on its timeout), and another process takes its pid while the
// request waits; /proc/<pid> then describes that process (here a sleep;
// in the attack, a process inside another container, whose mount
// namespace the agent would take for the caller's). Alive says the
// caller is gone. A caller that still waits is alive.
func TestPeerAlive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the agent socket serves root only, and ns_last_pid is root's")
	}
	dir := t.TempDir()
	h := &peerHandler{peers: make(chan Peer, 1), goOn: make(chan struct{})}
	sock := filepath.Join(dir, "agent.sock")
	startServer(t, h, sock)
	defer close(h.goOn)

	t.Run("caller exited and its pid reused", func(t *testing.T) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), sendAndExitEnv+"="+sock)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("caller: %v: %s", err, out)
		}
		p := <-h.peers
		if int(p.Pid) != cmd.Process.Pid {
			t.Fatalf("peer pid %d, caller's %d", p.Pid, cmd.Process.Pid)
		}
		pidreuse.Take(t, int(p.Pid), func() *exec.Cmd { return exec.Command("sleep", "60") })
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.Pid))
		if err != nil || strings.TrimSpace(string(comm)) != "sleep" {
			t.Fatalf("/proc/%d/comm = %q, %v: the pid was not reused", p.Pid, comm, err)
		}
		if err := p.Alive(); !errors.Is(err, ErrPeerGone) {
			t.Errorf("Alive for a caller whose pid another process holds: %v, want ErrPeerGone", err)
		}
		h.goOn <- struct{}{}
	})

	t.Run("caller waiting", func(t *testing.T) {
		c, err := Dial(sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		done := make(chan error, 1)
		go func() { _, err := c.List(context.Background()); done <- err }()
		var p Peer
		select {
		case p = <-h.peers:
		case <-time.After(10 * time.Second):
			t.Fatal("no request")
		}
		if err := p.Alive(); err != nil {
			t.Errorf("Alive for a caller that waits: %v", err)
		}
		h.goOn <- struct{}{}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
