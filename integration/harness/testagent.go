//go:build linux

package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/agent/localapi"
	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/linux"
	"github.com/lockbox-project/lockbox/mounter"
)

// TestAgent serves the agent's local API from the test process with fixed
// grants, the real Linux tmpfs mounter and the real socket protocol. It
// stands in for "lockbox agent" where a test or benchmark is about the
// containerd side alone (the runtime wrapper's cost, hook mechanics) and
// the manager would only add noise; end-to-end tests use the real agent.
type TestAgent struct {
	Socket string

	mu sync.Mutex
	// released is closed (and replaced) at every release, for
	// HeldReleased.
	released chan struct{}
	// wiping counts the releases taken out of mounts and not yet wiped.
	wiping   int
	services map[string][]mounter.Grant
	secrets  map[string][]byte
	mounts   map[string]*linux.Mount
	m        *linux.Mounter
	stop     func()
}

// StartTestAgent listens on a socket in a temp dir; services maps a
// service name to its grants, secrets a secret ID to its bytes.
func StartTestAgent(t testing.TB, services map[string][]mounter.Grant, secrets map[string][]byte) *TestAgent {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "lbx-agent-")
	if err != nil {
		t.Fatal(err)
	}
	// The agent's empty mountpoint file, as "lockbox agent" makes it at
	// start: adapters bind it at the targets of read-only and
	// user-namespaced containers.
	if err := linux.EnsureMountpointSource(mounter.LinuxMountpointSource); err != nil {
		t.Fatal(err)
	}
	a := &TestAgent{
		Socket:   filepath.Join(dir, "agent.sock"),
		services: services,
		secrets:  secrets,
		mounts:   map[string]*linux.Mount{},
		m:        linux.New(),
		released: make(chan struct{}),
	}
	ln, err := localapi.Listen(a.Socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := localapi.NewServer(a, nil)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	a.stop = sync.OnceFunc(func() {
		srv.Close()
		<-done
	})
	t.Cleanup(func() {
		a.stop()
		a.mu.Lock()
		for id, m := range a.mounts {
			m.Wipe()
			delete(a.mounts, id)
		}
		a.mu.Unlock()
		os.RemoveAll(dir)
	})
	return a
}

// Stop closes the agent's socket, as an agent that went down: claims
// fail from then on. The mounts it holds stay until the test ends.
func (a *TestAgent) Stop() { a.stop() }

// Held returns the IDs of the containers whose mounts the agent holds.
func (a *TestAgent) Held() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ids []string
	for id := range a.mounts {
		ids = append(ids, id)
	}
	return ids
}

// HeldReleased is Held once the agent holds nothing, or what it still
// holds after 30 s: the shim's release at Delete is written to the agent,
// not waited for (plugin/shim), so right after a delete the agent may not
// have served it yet. For checks that nothing is left.
func (a *TestAgent) HeldReleased() []string {
	timeout := time.After(30 * time.Second)
	for {
		a.mu.Lock()
		n, ch := len(a.mounts)+a.wiping, a.released
		a.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-timeout:
			return a.Held()
		}
	}
}

// WithSecret implements mounter.SecretSource.
func (a *TestAgent) WithSecret(id string, fn func([]byte) error) error {
	b, ok := a.secrets[id]
	if !ok {
		return fmt.Errorf("no secret %s", id)
	}
	return fn(b)
}

// Prepare implements localapi.Handler.
func (a *TestAgent) Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
	c := req.GetContainer()
	grants, ok := a.services[c.GetService()]
	if !ok {
		return nil, nil, localapi.Errorf(agent.Error_NOT_GRANTED, "service %q is not granted to this node", c.GetService())
	}
	plan, err := mounter.NewPlan(mounter.Linux, grants)
	if err != nil {
		return nil, nil, localapi.Errorf(agent.Error_INVALID, "%v", err)
	}
	m, err := a.m.BuildTmpfs(ctx, plan, a)
	if err != nil {
		return nil, nil, err
	}
	mc := mounter.Container{ID: c.GetId(), Pid: int(c.GetPid()), Rootfs: c.GetRootfs(), ReadonlyRootfs: c.GetReadonlyRootfs()}
	for _, x := range c.GetUidMappings() {
		mc.UIDMappings = append(mc.UIDMappings, mounter.IDMapping{ContainerID: x.GetContainerId(), HostID: x.GetHostId(), Size: x.GetSize()})
	}
	for _, x := range c.GetGidMappings() {
		mc.GIDMappings = append(mc.GIDMappings, mounter.IDMapping{ContainerID: x.GetContainerId(), HostID: x.GetHostId(), Size: x.GetSize()})
	}
	resp := &agent.PrepareResponse{}
	var files []*os.File
	if req.GetAttach() {
		if err := m.Attach(ctx, mc); err != nil {
			m.Wipe()
			return nil, nil, err
		}
		for _, f := range plan.Files {
			resp.Mounts = append(resp.Mounts, &agent.MountPoint{Target: f.Target, FdIndex: -1})
		}
	} else {
		hs, err := m.Handover(mc)
		if err != nil {
			m.Wipe()
			return nil, nil, err
		}
		for i, h := range hs {
			resp.Mounts = append(resp.Mounts, &agent.MountPoint{Target: h.Target, FdIndex: int32(i)})
			files = append(files, h.File)
		}
	}
	a.mu.Lock()
	if old := a.mounts[c.GetId()]; old != nil {
		old.Wipe()
	}
	a.mounts[c.GetId()] = m
	a.mu.Unlock()
	return resp, files, nil
}

// Targets implements localapi.Targeter.
func (a *TestAgent) Targets(ctx context.Context, req *agent.TargetsRequest) (*agent.TargetsResponse, error) {
	c := req.GetContainer()
	grants, ok := a.services[c.GetService()]
	if !ok {
		return nil, localapi.Errorf(agent.Error_NOT_GRANTED, "service %q is not granted to this node", c.GetService())
	}
	plan, err := mounter.NewPlan(mounter.Linux, grants)
	if err != nil {
		return nil, localapi.Errorf(agent.Error_INVALID, "%v", err)
	}
	resp := &agent.TargetsResponse{}
	for _, f := range plan.Files {
		resp.Targets = append(resp.Targets, f.Target)
	}
	return resp, nil
}

// Bind implements localapi.Binder: the test agent watches no process, so
// it only checks that it holds the container.
func (a *TestAgent) Bind(ctx context.Context, req *agent.BindRequest) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mounts[req.GetContainerId()] == nil {
		return localapi.Errorf(agent.Error_NOT_FOUND, "container %s: no secrets held", req.GetContainerId())
	}
	return nil
}

// Release implements localapi.Handler.
func (a *TestAgent) Release(ctx context.Context, id string) error {
	a.mu.Lock()
	m := a.mounts[id]
	delete(a.mounts, id)
	a.wiping++
	a.mu.Unlock()
	var err error
	if m != nil {
		err = m.Wipe()
	}
	a.mu.Lock()
	a.wiping--
	close(a.released)
	a.released = make(chan struct{})
	a.mu.Unlock()
	return err
}

// List implements localapi.Handler.
func (a *TestAgent) List(ctx context.Context) (*agent.ListResponse, error) {
	resp := &agent.ListResponse{}
	for _, id := range a.Held() {
		resp.Containers = append(resp.Containers, &agent.MountedContainer{Id: id})
	}
	return resp, nil
}
