package agent

import (
	"context"
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
	"github.com/lockbox-project/lockbox/internal/testutil/pidreuse"
)

// pausedReleases serves the agent but holds each release, once read,
// until the test lets it on: the window in which a caller can die and its
// pid be taken.
type pausedReleases struct {
	*Agent
	peers chan localapi.Peer
	goOn  chan struct{}
}

func (p *pausedReleases) ReleaseRequest(ctx context.Context, req *api.ReleaseRequest) error {
	peer, _ := localapi.PeerFromContext(ctx)
	p.peers <- peer
	<-p.goOn
	return p.Agent.ReleaseRequest(ctx, req)
}

// The attack: a caller on the host releases a running container's ID,
// naming no process (which wipes nothing while the holder runs), and is
// killed while the agent holds its request (a hook killed on its
// timeout). A process inside the holder takes its pid. Before the agent
// checked that the caller still ran after reading /proc/<pid>/ns/mnt, it
// took the release for one from inside the holder, and wiped a running
// container's secrets. Now the release is judged by what it names alone:
// the holder keeps its secrets.
func TestReleaseFromACallerWhosePidWasTaken(t *testing.T) {
	a := newAgent(t, t.TempDir(), newCache(t))
	defer a.Close()
	h := &pausedReleases{Agent: a, peers: make(chan localapi.Peer, 1), goOn: make(chan struct{})}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := localapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(observedOps, 16)
	srv := localapi.NewServer(h, testLog(t))
	srv.SetObserver(seen)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	ctx := context.Background()
	r := busybox.NewRunc(t)
	pid := runContainer(t, r, "web")
	if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "web", Service: "web", Pid: int32(pid)}}); err != nil {
		t.Fatal(err)
	}
	holderNS, err := mntNS(strconv.Itoa(pid))
	if err != nil {
		t.Fatal(err)
	}

	// The caller, in the host's namespace (it "enters" the test's own).
	caller := exec.Command(os.Args[0], "-test.run=^$")
	caller.Env = append(os.Environ(), releaseFromEnv+"="+strconv.Itoa(os.Getpid())+","+sock+",web")
	if err := caller.Start(); err != nil {
		t.Fatal(err)
	}
	var peer localapi.Peer
	select {
	case peer = <-h.peers:
	case <-time.After(10 * time.Second):
		t.Fatal("no release reached the agent")
	}
	caller.Process.Kill()
	caller.Wait()

	// A process in the holder's mount namespace takes the caller's pid.
	pidreuse.Take(t, int(peer.Pid), func() *exec.Cmd {
		return exec.Command("nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", pid), "sleep", "60")
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ns, _ := mntNS(strconv.Itoa(int(peer.Pid))); ns == holderNS {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d never entered the holder's namespace", peer.Pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(h.goOn)

	// The server serves the release (its answer goes nowhere). It names
	// nothing and the holder runs: it must leave the holder alone, which
	// still reads its secret and is still held.
	seen.next(t)
	a.wiping.wait()
	got, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/run/secrets/db_pw", pid))
	if err != nil || string(got) != "hunter2" {
		t.Errorf("the running holder reads %q, %v after a release from a caller whose pid was taken", got, err)
	}
	if l, _ := a.List(ctx); len(l.GetContainers()) != 1 {
		t.Errorf("the agent holds %v, want the running holder", l.GetContainers())
	}
}
