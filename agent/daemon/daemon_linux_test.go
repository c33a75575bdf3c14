package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/internal/testutil/managertest"
	"github.com/lockbox-project/lockbox/internal/testutil/procmem"
)

func marker(t testing.TB, tag string) []byte {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return []byte("LBXMARK-" + tag + "-" + hex.EncodeToString(b))
}

// TestNoSecretInMemoryAfterRemoval grants a secret that carries markers
// at its start, middle and end, checks the agent process holds it, removes
// the grant, and scans every writable mapping of the agent for the
// markers. Sizes cover one small frame and many frames and TLS records.
func TestNoSecretInMemoryAfterRemoval(t *testing.T) {
	bin := lockboxBinary(t)
	for _, size := range []int{160, 2 << 10, 300 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) { testNoSecretInMemory(t, bin, size) })
	}
}

func testNoSecretInMemory(t *testing.T, binary string, size int) {
	tm := managertest.Start(t)
	markers := [][]byte{marker(t, "head"), marker(t, "mid"), marker(t, "tail")}
	data := make([]byte, size)
	rand.Read(data)
	copy(data, markers[0])
	copy(data[size/2:], markers[1])
	copy(data[size-len(markers[2]):], markers[2])
	sec := tm.Secret("marker", data)
	svc := tm.Service("web", sec)

	// The real binary: what is scanned is what runs on nodes, including
	// its re-exec with GODEBUG=clobberfree=1,asyncpreemptoff=1.
	spec := childSpecIn(t, t.TempDir(), []string{tm.Addr}, tm.WorkerToken())
	spec.Binary = binary
	c := startChild(t, spec)
	if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", c.pid())); err != nil || !bytes.Contains(env, []byte("GODEBUG=clobberfree=1,asyncpreemptoff=1")) {
		t.Fatalf("lockbox agent did not re-exec with GODEBUG=clobberfree=1,asyncpreemptoff=1 (%v)", err)
	}
	cl := c.client(t)
	waitUntil(t, "the grant to reach the agent", func() bool { return granted(t, cl, "web") })

	// Positive control: the scan finds the secret while it is granted (in
	// its locked pages, at least).
	whileGranted := scanMemory(t, c.pid(), markers...)
	for i, n := range whileGranted {
		if n == 0 {
			t.Fatalf("marker %d not found while granted: the scan does not work", i)
		}
	}
	vmlck := procmem.KiB(t, c.pid(), "VmLck")
	if vmlck < int64(size/1024) {
		t.Errorf("VmLck %d KiB while a %d-byte secret is held", vmlck, size)
	}

	// The grant leaves the node: the service stays, without the secret.
	tm.UpdateService(svc)
	waitUntil(t, "the grant to leave the agent", func() bool { return procmem.KiB(t, c.pid(), "VmLck") < vmlck })
	n := scanMemory(t, c.pid(), markers...)
	for i, hits := range n {
		if hits != 0 {
			t.Errorf("after removal the agent's memory still holds marker %d (%d hits)", i, hits)
		}
	}
	if t.Failed() {
		// Where: a Go heap arena, a thread stack, a signal frame's
		// register slots (see scrub.go) tell different stories.
		for _, w := range markerLocations(t, c.pid(), markers...) {
			t.Log(w)
		}
	}
	t.Logf("%d-byte secret: hits while granted %v, after removal %v; VmLck %d -> %d KiB", size, whileGranted, n, vmlck, procmem.KiB(t, c.pid(), "VmLck"))
}

// TestKill9WithContainersRunning kills the agent with SIGKILL while two
// containers hold secrets; their files stay readable; a restarted agent
// forgets the one that ended meanwhile and wipes the other on release.
func TestKill9WithContainersRunning(t *testing.T) {
	tm := managertest.Start(t)
	tm.Service("web", tm.Secret("db_pw", []byte("kill9-secret")))
	dir := t.TempDir()
	spec := childSpecIn(t, dir, []string{tm.Addr}, tm.WorkerToken())
	c := startChild(t, spec)
	cl := c.client(t)
	waitUntil(t, "the grant", func() bool { return granted(t, cl, "web") })

	r := busybox.NewRunc(t)
	ctx := context.Background()
	for _, id := range []string{"live", "gone"} {
		b, err := busybox.NewBundle(filepath.Join(t.TempDir(), id), busybox.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Run(busybox.Context(t), id, b); err != nil {
			t.Fatal(err)
		}
		pid, err := r.Pid(busybox.Context(t), id)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := cl.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: id, Service: "web", Pid: int32(pid)}}); err != nil {
			t.Fatal(err)
		}
	}
	cat := func(id string) string {
		out, _, err := r.Exec(busybox.Context(t), id, "cat", "/run/secrets/db_pw")
		if err != nil {
			return ""
		}
		return out
	}

	c.kill()
	if got := cat("live"); got != "kill9-secret" {
		t.Fatalf("after kill -9 of the agent the container reads %q", got)
	}
	if err := r.Delete(busybox.Context(t), "gone"); err != nil {
		t.Fatal(err)
	}

	// The restart needs no token and no manager to recover.
	tm.Stop()
	spec.Token = ""
	c2 := startChild(t, spec)
	cl2 := c2.client(t)
	list, err := cl2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetContainers()) != 1 || list.GetContainers()[0].GetId() != "live" {
		t.Fatalf("restarted agent lists %v, want only live", list)
	}
	// With every manager gone the restarted agent has no grants: it fails
	// closed for new containers...
	if granted(t, cl2, "web") {
		t.Error("restarted agent without a manager mounted web")
	}
	// ...and wipes the running container's secrets when it is released
	// (naming its process, as lockbox-runtime does: the container runs).
	livePid, err := r.Pid(busybox.Context(t), "live")
	if err != nil {
		t.Fatal(err)
	}
	if err := cl2.ReleaseProcess(ctx, "live", int32(livePid), 0); err != nil {
		t.Fatal(err)
	}
	if got := cat("live"); got == "kill9-secret" {
		t.Error("secret readable after release by the restarted agent")
	}
	ents, _ := os.ReadDir(filepath.Join(spec.StateDir, "containers"))
	if len(ents) != 0 {
		t.Errorf("container records left: %v", ents)
	}
}

// lockboxBinary returns the full build: $LOCKBOX_BIN/lockbox, or cmd/lockbox
// built.
func lockboxBinary(b testing.TB) string {
	return lockboxBuild(b, "cmd/lockbox", "lockbox")
}

// lockboxBuild returns $LOCKBOX_BIN/path (make build's), or builds the
// module's package pkg (cmd/lockbox, or its node build cmd/lockbox/node).
func lockboxBuild(b testing.TB, pkg, path string) string {
	if dir := os.Getenv("LOCKBOX_BIN"); dir != "" {
		return filepath.Join(dir, path)
	}
	bin := filepath.Join(b.TempDir(), "lockbox")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/lockbox-project/lockbox/"+pkg).CombinedOutput()
	if err != nil {
		b.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// TestNRIReconnects: with --nri and no containerd to talk to, the agent
// stays up, serves its socket, and keeps trying to register.
func TestNRIReconnects(t *testing.T) {
	tm := managertest.Start(t)
	dir := t.TempDir()
	spec := childSpecIn(t, dir, []string{tm.Addr}, tm.WorkerToken())
	spec.NRI, spec.NRISock = true, filepath.Join(dir, "no-containerd", "nri.sock")
	c := startChild(t, spec)
	waitUntil(t, "two NRI reconnection attempts", func() bool {
		logs, _ := os.ReadFile(spec.LogFile)
		return bytes.Count(logs, []byte("NRI plugin disconnected")) >= 2
	})
	if _, err := c.client(t).List(context.Background()); err != nil {
		t.Fatalf("agent socket after NRI failures: %v", err)
	}
	select {
	case err := <-c.exited:
		c.exited <- err
		t.Fatalf("agent exited: %v", err)
	default:
	}
}
