//go:build integration && linux

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/integration/harness"
)

// Live updates (issue 14) end to end: a real manager and agent, containers
// started through the runc wrapper, the shim and NRI on containerd 2.4.2.
// The admin API is called directly with ServiceSpec.live_update set (the
// CLI's --live-update is the control plane's half).

// liveReader is a container's reader loop: it reads its two files (a
// relative and an absolute single-file target) as fast as busybox sh can,
// logs every read that is not a whole version ("...-ok"), and ends when it
// reads "final".
const liveReader = `n=0; bad=0; seen=0; last=
while :; do
  for f in /run/secrets/rot /etc/app/rot.pem; do
    c=$(cat $f 2>&1) || { echo "ERR $f [$c]"; bad=$((bad+1)); }
    [ "$c" = "$last" ] || { seen=$((seen+1)); last=$c; }
    case "$c" in *-ok) ;; final) echo "reads $n versions $seen bad $bad"; exit 0;; *) echo "BAD $f [$c]"; bad=$((bad+1));; esac
  done
  n=$((n+1))
done`

// liveAdmin is the manager's admin API over its root-only socket.
type liveAdmin struct {
	t     *testing.T
	admin adminapi.AdminClient
}

func dialAdmin(t *testing.T, m *harness.Manager) *liveAdmin {
	conn, err := grpc.NewClient("unix://"+m.AdminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &liveAdmin{t: t, admin: adminapi.NewAdminClient(conn)}
}

func (l *liveAdmin) secret(ctx context.Context, name, data string) *types.Secret {
	l.t.Helper()
	resp, err := l.admin.CreateSecret(ctx, &adminapi.CreateSecretRequest{Spec: &types.SecretSpec{Name: name}, Data: []byte(data)})
	if err != nil {
		l.t.Fatal(err)
	}
	return resp.GetSecret()
}

// liveRef is a reference of secret s at target, with signal.
func liveRef(s *types.Secret, target, signal string) *types.SecretReference {
	return &types.SecretReference{SecretId: s.GetId(), SecretName: s.GetSpec().GetName(), Target: &types.FileTarget{Name: target}, Signal: signal}
}

// service creates (svc nil) or updates a service with refs. A name ending
// in "-k8s" is for pods in the default namespace (a pod may claim only a
// service whose claim rules name its namespace, which other containers
// then may not).
func (l *liveAdmin) service(ctx context.Context, svc *types.Service, name string, live bool, refs ...*types.SecretReference) *types.Service {
	l.t.Helper()
	spec := &types.ServiceSpec{Name: name, Secrets: refs, LiveUpdate: live}
	if strings.HasSuffix(name, "-k8s") {
		spec.ClaimRules = []string{"k8s.namespace==default"}
	}
	if svc == nil {
		resp, err := l.admin.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: spec})
		if err != nil {
			l.t.Fatal(err)
		}
		return resp.GetService()
	}
	resp, err := l.admin.UpdateService(ctx, &adminapi.UpdateServiceRequest{NameOrId: svc.GetId(), Version: svc.GetMeta().GetVersion(), Spec: spec})
	if err != nil {
		l.t.Fatal(err)
	}
	return resp.GetService()
}

// rotation is the live service's state: its two references rotate
// together, each to a new secret per version.
type rotation struct {
	l    *liveAdmin
	name string
	svc  *types.Service
	n    int
}

func (r *rotation) to(ctx context.Context, version string) {
	r.l.t.Helper()
	r.n++
	a := r.l.secret(ctx, fmt.Sprintf("%s-rot-%d", r.name, r.n), version)
	b := r.l.secret(ctx, fmt.Sprintf("%s-pem-%d", r.name, r.n), version)
	r.svc = r.l.service(ctx, r.svc, r.name, true, liveRef(a, "rot", ""), liveRef(b, "/etc/app/rot.pem", ""))
}

// heldPid waits until the agent holds container id and returns its
// process, from the agent's record.
func heldPid(t *testing.T, a *harness.Agent, id string) int {
	t.Helper()
	var pid int
	a.WaitUntil(t, "the agent to hold "+id, func() error {
		b, err := os.ReadFile(filepath.Join(a.StateDir, "containers", id+".json"))
		if err != nil {
			return err
		}
		var rec struct {
			Pid int `json:"pid"`
		}
		if err := json.Unmarshal(b, &rec); err != nil || rec.Pid <= 0 {
			return fmt.Errorf("record %s: no pid (%v)", b, err)
		}
		pid = rec.Pid
		return nil
	})
	return pid
}

// catchesSignal waits until pid, the container's shell, has a handler for
// sig (its trap is set). Before the container starts, pid is runc's init,
// whose Go runtime catches every signal: the shell's name tells the two
// apart.
func catchesSignal(t *testing.T, a *harness.Agent, pid, sig int) {
	t.Helper()
	a.WaitUntil(t, "the container's trap", func() error {
		if comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); err != nil || strings.TrimSpace(string(comm)) != "sh" {
			return fmt.Errorf("pid %d runs %q, not the container's shell yet (%v)", pid, comm, err)
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
				mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				if err == nil && mask&(1<<(sig-1)) != 0 {
					return nil
				}
			}
		}
		return fmt.Errorf("pid %d does not catch signal %d yet", pid, sig)
	})
}

// TestLiveUpdate: through each adapter, a container's reader loop never
// sees a torn, empty or missing file across 100 rotations of a relative and
// an absolute target; a service without live update keeps its old file; a
// grant's signal reaches the container's init.
func TestLiveUpdate(t *testing.T) {
	bin := harness.LockboxBin(t)
	m := harness.StartManager(t, bin)
	a := harness.StartAgent(t, bin, m)
	l := dialAdmin(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	static := l.service(ctx, nil, "static", false, liveRef(l.secret(ctx, "static-1", "static-old"), "stat", ""))
	sigSvc := l.service(ctx, nil, "sig", true, liveRef(l.secret(ctx, "sig-1", "sig-one"), "sig", "SIGHUP"))

	nriBin := buildNRIPlugin(t)
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, CRI: true, NRI: true, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})
	c.Import("k8s.io", harness.ImageConfig{Name: busybox})
	harness.StartProc(t, "lockbox-nri", filepath.Join(t.TempDir(), "nri.log"), nriBin, "--agent-socket", a.Socket, "--nri-socket", c.NRISocket)
	cri := c.CRI()
	pod, err := cri.RunPod(ctx, "live", "", nil)
	if err != nil {
		t.Fatal(err)
	}

	// run starts a claiming container through the adapter and returns
	// its output once it exits.
	adapters := []struct {
		name, service string
		run           func(id, service, script string) (string, error)
	}{
		{"wrapper", "live-wrapper", func(id, service, script string) (string, error) {
			return ctrRun(ctx, c, bin, id, service, "sh", "-c", script)
		}},
		{"shim", "live-shim", func(id, service, script string) (string, error) {
			args := append(append(c.ShimRunArgs(shimRuntime), "--annotation", "lockbox.service="+service, busybox, id), "sh", "-c", script)
			return c.Ctr(ctx, "default", args...)
		}},
		{"nri", "live-k8s", func(id, service, script string) (string, error) {
			out, code, err := cri.RunContainer(ctx, pod, id, busybox, harness.ContainerOptions{Annotations: map[string]string{"lockbox.service": service}}, "sh", "-c", script)
			if err == nil && code != 0 {
				err = fmt.Errorf("exit %d: %s", code, out)
			}
			return out, err
		}},
	}
	// CRI names containers by ID, not by the name given: find the ID the
	// agent holds that is not one of the others.
	heldNew := func(t *testing.T, before []string) string {
		var id string
		a.WaitUntil(t, "a new container held", func() error {
			now, err := a.List(ctx)
			if err != nil {
				return err
			}
			for _, x := range now {
				if !strings.Contains(strings.Join(before, " "), x) {
					id = x
					return nil
				}
			}
			return fmt.Errorf("agent holds %v", now)
		})
		return id
	}
	for _, ad := range adapters {
		t.Run(ad.name, func(t *testing.T) {
			rot := &rotation{l: l, name: ad.service}
			rot.to(ctx, "v0-ok")
			start := time.Now()
			// Rotations under a reader loop.
			before, _ := a.List(ctx)
			done := make(chan string, 1)
			errc := make(chan error, 1)
			go func() {
				out, err := ad.run(fmt.Sprintf("live-%s", ad.name), ad.service, liveReader)
				done <- out
				errc <- err
			}()
			id := heldNew(t, before)
			const rotations = 100
			for v := 1; v <= rotations; v++ {
				rot.to(ctx, fmt.Sprintf("%s-v%d%s-ok", ad.name, v, strings.Repeat("x", v%7)))
			}
			rot.to(ctx, "final")
			out := <-done
			if err := <-errc; err != nil {
				t.Fatalf("reader container: %v: %s", err, out)
			}
			if !strings.Contains(out, "bad 0") || strings.Contains(out, "BAD") || strings.Contains(out, "ERR") {
				t.Errorf("the reader saw bad reads across %d rotations:\n%s", rotations, out)
			}
			// The rotations happened under the reader, not before it read.
			var reads, versions, bad int
			if _, err := fmt.Sscanf(lastLine(out), "reads %d versions %d bad %d", &reads, &versions, &bad); err != nil || versions < 4 {
				t.Errorf("the reader saw %d versions (%v): %q", versions, err, lastLine(out))
			}
			t.Logf("%s: container %s, %d rotations: %s (%v)", ad.name, id, rotations, strings.TrimSpace(lastLine(out)), time.Since(start).Round(time.Millisecond))
		})
	}

	// A service without live update keeps a running container's file,
	// and a grant's signal reaches the container's init (through the
	// shim, the primary adapter; the agent's decision is the same for all).
	t.Run("static and signal", func(t *testing.T) {
		staticArgs := []string{"run", "-d", "--runtime", shimRuntime, "--fifo-dir", c.FifoDir, "--annotation", "lockbox.service=static", busybox, "static", "sleep", "600"}
		if out, err := c.Ctr(ctx, "default", staticArgs...); err != nil {
			t.Fatalf("start the static container: %v: %s", err, out)
		}
		heldPid(t, a, "static")
		l.service(ctx, static, "static", false, liveRef(l.secret(ctx, "static-2", "static-new"), "stat", ""))

		done := make(chan string, 1)
		errc := make(chan error, 1)
		go func() {
			args := append(append(c.ShimRunArgs(shimRuntime), "--annotation", "lockbox.service=sig", busybox, "sig"),
				"sh", "-c", `trap 'echo "got-hup $(cat /run/secrets/sig)"; exit 0' HUP; while :; do sleep 0.05; done`)
			out, err := c.Ctr(ctx, "default", args...)
			done <- out
			errc <- err
		}()
		catchesSignal(t, a, heldPid(t, a, "sig"), 1)
		l.service(ctx, sigSvc, "sig", true, liveRef(l.secret(ctx, "sig-2", "sig-two"), "sig", "SIGHUP"))
		select {
		case out := <-done:
			if err := <-errc; err != nil || strings.TrimSpace(out) != "got-hup sig-two" {
				t.Fatalf("signal container: %v: %q, want it to get SIGHUP after its file changed", err, out)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the container's init got no SIGHUP within 30 s of the update")
		}
		// The static update went out before the signal's: it has reached
		// the node, and the running static container keeps its file.
		out, err := c.Ctr(ctx, "default", "task", "exec", "--fifo-dir", c.FifoDir, "--exec-id", "cat", "static", "cat", "/run/secrets/stat")
		if err != nil || out != "static-old" {
			t.Errorf("the static container reads %q (%v), want static-old", out, err)
		}
	})
}

// TestLiveUpdateCatchUp: an agent cut off from its manager (a network
// partition) when a live update is made applies it to its running
// container once the link is back.
func TestLiveUpdateCatchUp(t *testing.T) {
	bin := harness.LockboxBin(t)
	n := harness.NewNetnsPair(t, "live", 2)
	m := harness.StartManagerWith(t, bin, harness.ManagerOptions{Prefix: harness.NetnsExec(n.A), Addr: n.IPA + ":7443"})
	l := dialAdmin(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rot := &rotation{l: l, name: "live"}
	rot.to(ctx, "v0-ok")
	a := harness.StartAgentWith(t, bin, m, harness.AgentOptions{Prefix: harness.NetnsExec(n.B)})
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})

	done := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		var out string
		var err error
		// The first runs may come before the agent has its grants.
		for try := 0; try < 100; try++ {
			args := append(append(c.ShimRunArgs(shimRuntime), "--annotation", "lockbox.service=live", busybox, fmt.Sprintf("reader%d", try)), "sh", "-c", liveReader)
			out, err = c.Ctr(ctx, "default", args...)
			if err == nil || !strings.Contains(err.Error(), "no grant") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		done <- out
		errc <- err
	}()
	a.WaitUntil(t, "the reader container held", func() error {
		held, err := a.List(ctx)
		if err == nil && len(held) == 0 {
			err = fmt.Errorf("no container held")
		}
		return err
	})
	n.Cut(t)
	// Wait for the agent to see its session end: the update must come
	// back through a new session (its snapshot or resume), not through
	// the old stream's retransmissions.
	a.WaitUntil(t, "the agent's session to end", func() error {
		b, err := os.ReadFile(a.LogPath)
		if err == nil && !strings.Contains(string(b), "session with manager ended") {
			err = fmt.Errorf("session still up")
		}
		return err
	})
	rot.to(ctx, "final")
	restored := time.Now()
	n.Restore(t)
	select {
	case out := <-done:
		if err := <-errc; err != nil || !strings.Contains(out, "bad 0") {
			t.Fatalf("reader container: %v: %s", err, out)
		}
		t.Logf("the update made while the agent was cut off reached its container %v after the link came back: %s",
			time.Since(restored).Round(time.Millisecond), strings.TrimSpace(lastLine(out)))
	case <-time.After(90 * time.Second):
		t.Fatal("the update made during the partition did not reach the running container within 90 s of the link's return")
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
