//go:build integration && linux

package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/agent/localapi"
	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/plugin/nri"
)

// refusedForLockbox reports whether err is NRI's default validator
// (containerd 2.4.2) refusing a container because the lockbox plugin is
// not connected: `required plugin "lockbox" not present`, or
// `required plugins "lockbox,lockbox" not present` when both the global
// list and the pod name it.
func refusedForLockbox(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "validation error: required plugin") && strings.Contains(s, `"lockbox`) && strings.Contains(s, "not present")
}

// socketAgent is the NRI plugin's view of an agent reached over its local
// API socket, dialled afresh for every call (as lockbox-nri redials): the
// test moves the socket to a dead path to take the agent down under a
// plugin that stays connected.
type socketAgent struct {
	mu     sync.Mutex
	socket string
}

func (s *socketAgent) setSocket(p string) {
	s.mu.Lock()
	s.socket = p
	s.mu.Unlock()
}

func (s *socketAgent) dial() (*localapi.Client, error) {
	s.mu.Lock()
	p := s.socket
	s.mu.Unlock()
	return localapi.Dial(p)
}

func (s *socketAgent) Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
	c, err := s.dial()
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	return c.Prepare(ctx, req)
}

func (s *socketAgent) Release(ctx context.Context, id string) error {
	c, err := s.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Release(ctx, id)
}

func (s *socketAgent) Targets(ctx context.Context, req *agent.TargetsRequest) (*agent.TargetsResponse, error) {
	c, err := s.dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Targets(ctx, req)
}

func (s *socketAgent) List(ctx context.Context) (*agent.ListResponse, error) {
	c, err := s.dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.List(ctx)
}

// startNRIPlugin runs the plugin against c until the test ends and waits
// for it to register.
func startNRIPlugin(t *testing.T, c *harness.Containerd, a nri.Agent) {
	t.Helper()
	p := nri.New(a)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, nri.Options{Socket: c.NRISocket}) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-p.Synced():
	case err := <-done:
		t.Fatalf("nri plugin stopped before registering: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("nri plugin did not register in 30s")
	}
}

// runIn starts a pod with podAnn and runs one container in it.
func runIn(ctx context.Context, t *testing.T, r *harness.CRI, pod string, podAnn map[string]string, ctr string, o harness.ContainerOptions, cmd ...string) (string, int32, error) {
	t.Helper()
	p, err := r.RunPod(ctx, pod, "", podAnn)
	if err != nil {
		t.Fatal(err)
	}
	return r.RunContainer(ctx, p, ctr, busybox, o, cmd...)
}

// The per-pod form: with NRI's default validator on and nothing required
// globally, a pod that requires the lockbox plugin (nri.PodAnnotations)
// gets no container while the plugin is down, and every other pod starts.
// With the plugin up, the plugin itself refuses, naming the service, a
// claim it cannot serve: a service with no grant, and any claim once the
// agent is gone.
func TestNRIRequiredPerPod(t *testing.T) {
	a := harness.StartTestAgent(t, testGrants, testSecrets)
	c := harness.StartContainerd(t, harness.Options{CRI: true, NRI: true, NRIValidator: true})
	c.Import("k8s.io", harness.ImageConfig{Name: busybox})
	r := c.CRI()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("plugin down: claiming pod refused", func(t *testing.T) {
		_, _, err := runIn(ctx, t, r, "claiming-down", nri.PodAnnotations("web"), "app", harness.ContainerOptions{}, "true")
		if !refusedForLockbox(err) {
			t.Fatalf("claiming container created without the lockbox NRI plugin: %v", err)
		}
		t.Log(err)
	})

	t.Run("plugin down: container scope", func(t *testing.T) {
		podAnn := map[string]string{nri.RequiredAnnotationKey("app"): nri.RequiredAnnotationValue()}
		pod, err := r.RunPod(ctx, "scoped-down", "", podAnn)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = r.RunContainer(ctx, pod, "app", busybox, harness.ContainerOptions{Annotations: map[string]string{"lockbox.service": "web"}}, "true")
		if !refusedForLockbox(err) {
			t.Fatalf("claiming container app created without the lockbox NRI plugin: %v", err)
		}
		out, code, err := r.RunContainer(ctx, pod, "sidecar", busybox, harness.ContainerOptions{}, "echo", "sidecar-ran")
		if err != nil || code != 0 || !strings.Contains(out, "sidecar-ran") {
			t.Fatalf("sidecar of the same pod, which requires nothing: exit %d, %v\n%s", code, err, out)
		}
	})

	t.Run("plugin down: plain pod starts", func(t *testing.T) {
		out, code, err := runIn(ctx, t, r, "plain-down", nil, "plain", harness.ContainerOptions{}, "echo", "plain-ran")
		if err != nil || code != 0 || !strings.Contains(out, "plain-ran") {
			t.Fatalf("non-claiming pod with the plugin down: exit %d, %v\n%s", code, err, out)
		}
	})

	sa := &socketAgent{socket: a.Socket}
	startNRIPlugin(t, c, sa)

	t.Run("plugin up: claiming pod reads its secrets", func(t *testing.T) {
		out, code, err := runIn(ctx, t, r, "claiming-up", nri.PodAnnotations("web"), "app", harness.ContainerOptions{}, "sh", "-c", inspectScript)
		if err != nil || code != 0 {
			t.Fatalf("claiming container: exit %d, %v\n%s", code, err, out)
		}
		checkInspect(t, out)
	})

	t.Run("plugin up: service not granted", func(t *testing.T) {
		_, _, err := runIn(ctx, t, r, "denied-up", nri.PodAnnotations("other"), "app", harness.ContainerOptions{}, "true")
		if err == nil || !strings.Contains(err.Error(), `claims service "other"`) || !strings.Contains(err.Error(), "NOT_GRANTED") {
			t.Fatalf("claiming an ungranted service: err = %v, want a failed start naming the service", err)
		}
		t.Log(err)
	})

	// The agent goes away under a connected plugin (lockbox-nri outliving
	// its agent): the plugin cannot serve the claim and fails the start.
	sa.setSocket(filepath.Join(t.TempDir(), "gone.sock"))
	t.Run("agent down: claiming pod refused", func(t *testing.T) {
		_, _, err := runIn(ctx, t, r, "claiming-agent-down", nri.PodAnnotations("web"), "app", harness.ContainerOptions{}, "true")
		if err == nil || !strings.Contains(err.Error(), `claims service "web"`) || !strings.Contains(err.Error(), "dial agent") {
			t.Fatalf("claiming container with the agent down: err = %v, want a failed start naming the service", err)
		}
		t.Log(err)
	})
	t.Run("agent down: plain pod starts", func(t *testing.T) {
		out, code, err := runIn(ctx, t, r, "plain-agent-down", nil, "plain", harness.ContainerOptions{}, "echo", "plain-ran")
		if err != nil || code != 0 || !strings.Contains(out, "plain-ran") {
			t.Fatalf("non-claiming pod with the agent down: exit %d, %v\n%s", code, err, out)
		}
	})
	sa.setSocket(a.Socket)

	if held := a.Held(); len(held) != 0 {
		t.Errorf("agent holds %v after every container was removed", held)
	}
}

// The global form, required_plugins = ['lockbox'], which Lockbox does not
// advise: with the plugin down it refuses every pod's containers, claiming
// or not (on a real node: CNI, kube-proxy, the agent's own pod), unless
// the pod carries the toleration annotation, which in turn skips every
// requirement, the per-pod one included.
func TestNRIRequiredGlobal(t *testing.T) {
	const tolerate = "tolerate-missing-nri-plugins.noderesource.dev"
	c := harness.StartContainerd(t, harness.Options{CRI: true, NRI: true, NRIRequired: []string{nri.DefaultName}, NRITolerateAnnotation: tolerate})
	c.Import("k8s.io", harness.ImageConfig{Name: busybox})
	r := c.CRI()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	for _, tt := range []struct {
		pod    string
		ann    map[string]string
		starts bool
	}{
		{"claiming", nri.PodAnnotations("web"), false},
		{"plain", nil, false},
		{"plain-tolerating", map[string]string{tolerate: "true"}, true},
		// The toleration wins over the pod's own requirement: such a pod
		// starts without its secrets. Its author asked for both.
		{"claiming-tolerating", map[string]string{"lockbox.service": "web", nri.RequiredPluginsAnnotation: nri.RequiredAnnotationValue(), tolerate: "true"}, true},
	} {
		t.Run(tt.pod, func(t *testing.T) {
			out, code, err := runIn(ctx, t, r, tt.pod, tt.ann, "app", harness.ContainerOptions{}, "sh", "-c", "echo ran; ls /run/secrets 2>&1; true")
			if !tt.starts {
				if !refusedForLockbox(err) {
					t.Fatalf("container of pod %s created with the required plugin down: %v\n%s", tt.pod, err, out)
				}
				return
			}
			if err != nil || code != 0 || !strings.Contains(out, "ran") || !strings.Contains(out, "No such file") {
				t.Fatalf("pod %s: exit %d, %v\n%s", tt.pod, code, err, out)
			}
		})
	}
}
