//go:build integration && linux

package integration

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/plugin/nri"
)

// pluginLog is the plugin's log, read back by the test.
type pluginLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *pluginLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

func (l *pluginLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// wait polls the log until a line holds every one of want.
func (l *pluginLog) wait(ctx context.Context, t *testing.T, want ...string) string {
	t.Helper()
	for {
		for _, line := range strings.Split(l.String(), "\n") {
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(line, w)
			}
			if ok {
				return line
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("plugin log has no line with %q:\n%s", want, l)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// bouncer runs the NRI plugin in the test process and stops and restarts
// it, as a lockbox-nri that crashed and came back.
type bouncer struct {
	t      *testing.T
	c      *harness.Containerd
	a      nri.Agent
	log    *pluginLog
	cancel context.CancelFunc
	done   chan error
}

func (b *bouncer) start() {
	b.t.Helper()
	p := nri.New(b.a)
	p.SetLogger(slog.New(slog.NewTextHandler(b.log, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel, b.done = cancel, make(chan error, 1)
	go func() { b.done <- p.Run(ctx, nri.Options{Socket: b.c.NRISocket}) }()
	select {
	case <-p.Synced():
	case err := <-b.done:
		b.t.Fatalf("nri plugin stopped before registering: %v", err)
	case <-time.After(30 * time.Second):
		b.t.Fatal("nri plugin did not register in 30s")
	}
}

// stop disconnects the plugin and waits until containerd has dropped it:
// NRI's validator then refuses a container of a pod that requires it.
func (b *bouncer) stop(ctx context.Context, r *harness.CRI, probe *harness.Pod) {
	b.t.Helper()
	b.cancel()
	<-b.done
	for {
		id, err := r.CreateContainer(ctx, probe, "probe", busybox, harness.ContainerOptions{}, "true")
		if refusedForLockbox(err) {
			return
		}
		if err == nil {
			r.RemoveContainer(ctx, id)
		}
		select {
		case <-ctx.Done():
			b.t.Fatalf("containerd still runs containers of a pod that requires the stopped plugin: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// readSecretScript prints what the container has at its secret's target,
// then keeps running.
const readSecretScript = `echo "db_pw=[$(cat /run/secrets/db_pw 2>&1)]"; echo started; exec sleep 3600`

// waitStarted waits for a container running readSecretScript to have
// printed what it read, and returns that.
func waitStarted(ctx context.Context, t *testing.T, r *harness.CRI, pod *harness.Pod, name string) string {
	t.Helper()
	for {
		out, _ := r.Log(pod, name)
		if strings.Contains(out, "started") {
			return out
		}
		select {
		case <-ctx.Done():
			t.Fatalf("container %s did not start: %q", name, out)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func wantState(ctx context.Context, t *testing.T, r *harness.CRI, id, name string, want cri.ContainerState) *cri.ContainerStatus {
	t.Helper()
	st, err := r.ContainerStatus(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != want {
		t.Fatalf("container %s is %s, want %s", name, st.State, want)
	}
	return st
}

// Issue 12, the create/start gap: a claiming container created while the
// plugin was connected (its mountpoints bound) and started while it was
// away runs without its secrets (empty mountpoint files, never another's).
// When the plugin comes back, its Synchronize evicts such a container (it
// claims a service and the agent holds nothing for it) and leaves alone
// the claiming containers the agent holds and the containers that claim
// nothing. With the agent unreachable at that Synchronize, nothing is
// evicted until the agent answers.
func TestNRIEvictStartedWhileAway(t *testing.T) {
	a := harness.StartTestAgent(t, testGrants, testSecrets)
	c := harness.StartContainerd(t, harness.Options{CRI: true, NRI: true, NRIValidator: true})
	c.Import("k8s.io", harness.ImageConfig{Name: busybox})
	r := c.CRI()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	sa := &socketAgent{socket: a.Socket}
	plug := &bouncer{t: t, c: c, a: sa, log: &pluginLog{}}
	plug.start()

	run := func(name string, ann map[string]string) *harness.Pod {
		pod, err := r.RunPod(ctx, name, "", ann)
		if err != nil {
			t.Fatal(err)
		}
		return pod
	}
	claiming, plain, probe := run("claiming", nri.PodAnnotations("web")), run("plain", nil), run("probe", nri.PodAnnotations("web"))
	create := func(pod *harness.Pod, name string) string {
		id, err := r.CreateContainer(ctx, pod, name, busybox, harness.ContainerOptions{}, "sh", "-c", readSecretScript)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	start := func(id, name string) {
		if err := r.StartContainer(ctx, id); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
	}

	// held: started with the plugin there, it has its secrets.
	held := create(claiming, "held")
	start(held, "held")
	if out := waitStarted(ctx, t, r, claiming, "held"); !strings.Contains(out, "db_pw=[hunter2-db]") {
		t.Fatalf("claiming container started with the plugin: %q", out)
	}
	// Created with the plugin there: their mountpoints are bound.
	away1, away2 := create(claiming, "away1"), create(claiming, "away2")
	plainID := create(plain, "plain")

	t.Run("started while away, plugin back", func(t *testing.T) {
		plug.stop(ctx, r, probe)
		start(away1, "away1")
		start(plainID, "plain")
		// The gap: it runs, with empty mountpoint files and no secret.
		if out := waitStarted(ctx, t, r, claiming, "away1"); !strings.Contains(out, "db_pw=[]") || strings.Contains(out, "hunter2") {
			t.Fatalf("claiming container started without the plugin read: %q", out)
		}
		waitStarted(ctx, t, r, plain, "plain")

		began := time.Now()
		plug.start()
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		defer wcancel()
		st, err := r.WaitState(wctx, away1, cri.ContainerState_CONTAINER_EXITED)
		if err != nil {
			t.Fatalf("not evicted: %v\nplugin log:\n%s", err, plug.log)
		}
		t.Logf("evicted %v after the plugin reconnected: exit %d, reason %q, message %q", time.Since(began).Round(time.Millisecond), st.ExitCode, st.Reason, st.Message)
		if st.ExitCode != 137 {
			t.Errorf("evicted container exit code %d, want 137 (SIGKILL)", st.ExitCode)
		}
		// containerd's status says only that it was killed; the plugin's
		// log says why.
		line := plug.log.wait(ctx, t, "evicted claiming container", "id="+away1, "service=web", nri.AwayReason)
		t.Log(line)
		wantState(ctx, t, r, held, "held", cri.ContainerState_CONTAINER_RUNNING)
		wantState(ctx, t, r, plainID, "plain", cri.ContainerState_CONTAINER_RUNNING)
	})

	t.Run("agent unreachable at synchronize", func(t *testing.T) {
		plug.stop(ctx, r, probe)
		start(away2, "away2")
		waitStarted(ctx, t, r, claiming, "away2")
		sa.setSocket(filepath.Join(t.TempDir(), "gone.sock"))
		plug.start()
		plug.log.wait(ctx, t, "cannot be reached at synchronize", "no container evicted")
		// The decision was made without the agent: nothing evicted.
		wantState(ctx, t, r, away2, "away2", cri.ContainerState_CONTAINER_RUNNING)
		wantState(ctx, t, r, held, "held", cri.ContainerState_CONTAINER_RUNNING)

		sa.setSocket(a.Socket)
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		defer wcancel()
		if _, err := r.WaitState(wctx, away2, cri.ContainerState_CONTAINER_EXITED); err != nil {
			t.Fatalf("not evicted once the agent answered: %v\nplugin log:\n%s", err, plug.log)
		}
		plug.log.wait(ctx, t, "evicted claiming container", "id="+away2, "service=web")
		wantState(ctx, t, r, held, "held", cri.ContainerState_CONTAINER_RUNNING)
		wantState(ctx, t, r, plainID, "plain", cri.ContainerState_CONTAINER_RUNNING)
	})

	// The other half of the gap is closed already: with the plugin there
	// and the agent gone between create and start, the start fails and
	// nothing runs.
	t.Run("agent gone at start", func(t *testing.T) {
		id := create(claiming, "late")
		sa.setSocket(filepath.Join(t.TempDir(), "gone.sock"))
		defer sa.setSocket(a.Socket)
		err := r.StartContainer(ctx, id)
		if err == nil || !strings.Contains(err.Error(), `claims service "web"`) {
			t.Fatalf("start with the agent gone: %v, want a failure naming the service", err)
		}
		st, serr := r.ContainerStatus(ctx, id)
		if serr != nil {
			t.Fatal(serr)
		}
		if st.State == cri.ContainerState_CONTAINER_RUNNING {
			t.Fatalf("container runs after its start failed: %v", st)
		}
		t.Logf("%v; state %s, reason %q", err, st.State, st.Reason)
	})
}
