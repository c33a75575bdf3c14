package nri

import (
	"context"
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"

	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/api/claim"
)

type fakeAgent struct {
	prepared []*agent.PrepareRequest
	released []string
	held     []string
	err      error
	targeted []*agent.TargetsRequest
}

func (a *fakeAgent) Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
	a.prepared = append(a.prepared, req)
	if a.err != nil {
		return nil, nil, a.err
	}
	return &agent.PrepareResponse{Mounts: []*agent.MountPoint{{Target: SecretsDir, FdIndex: -1}}}, nil, nil
}

func (a *fakeAgent) Targets(ctx context.Context, req *agent.TargetsRequest) (*agent.TargetsResponse, error) {
	a.targeted = append(a.targeted, req)
	if req.GetContainer().GetService() != "web" {
		return nil, errors.New(`agent: NOT_GRANTED: service "` + req.GetContainer().GetService() + `" is not granted to this node`)
	}
	return &agent.TargetsResponse{Targets: []string{"/run/secrets/db_pw", "/etc/app/cert.pem"}}, nil
}

func (a *fakeAgent) Release(ctx context.Context, id string) error {
	a.released = append(a.released, id)
	return nil
}

func (a *fakeAgent) List(ctx context.Context) (*agent.ListResponse, error) {
	resp := &agent.ListResponse{}
	for _, id := range a.held {
		resp.Containers = append(resp.Containers, &agent.MountedContainer{Id: id})
	}
	return resp, nil
}

func TestService(t *testing.T) {
	pod := &api.PodSandbox{Annotations: map[string]string{ServiceAnnotation: "pod-svc"}}
	tests := []struct {
		name   string
		pod    *api.PodSandbox
		ctr    *api.Container
		want   string
		claims bool
	}{
		{"none", &api.PodSandbox{}, &api.Container{}, "", false},
		{"nil pod", nil, &api.Container{}, "", false},
		{"pod", pod, &api.Container{}, "pod-svc", true},
		{"container wins", pod, &api.Container{Annotations: map[string]string{ServiceAnnotation: "ctr-svc"}}, "ctr-svc", true},
	}
	for _, tt := range tests {
		got, ok := service(tt.pod, tt.ctr)
		if got != tt.want || ok != tt.claims {
			t.Errorf("%s: service = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.claims)
		}
	}
}

// The adjustment gives each target a read-only bind of the agent's empty
// file, and adds no tmpfs (issue 12: the placeholder tmpfs NRI added at
// /run/secrets was writable, and hid what the pod had there).
func TestCreateContainerMountpoints(t *testing.T) {
	fa := &fakeAgent{}
	p := New(fa)
	claimWeb := map[string]string{ServiceAnnotation: "web"}
	userns := &api.LinuxContainer{Namespaces: []*api.LinuxNamespace{{Type: "user"}}}
	tests := []struct {
		name string
		ctr  *api.Container
	}{
		{"claim", &api.Container{Id: "c1", Annotations: claimWeb}},
		{"claim, /run is a mount", &api.Container{Id: "c1", Annotations: claimWeb, Mounts: []*api.Mount{{Destination: "/run"}}}},
		{"claim, user namespace", &api.Container{Id: "c1", Annotations: claimWeb, Linux: userns}},
		{"claim, a service-account volume", &api.Container{Id: "c1", Annotations: claimWeb,
			Mounts: []*api.Mount{{Destination: "/var/run/secrets/kubernetes.io/serviceaccount", Type: "bind", Source: "/x", Options: []string{"rbind", "ro"}}}}},
	}
	for _, tt := range tests {
		fa.targeted = nil
		adj, _, err := p.CreateContainer(context.Background(), &api.PodSandbox{}, tt.ctr)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if len(fa.targeted) != 1 || fa.targeted[0].GetContainer().GetId() != "c1" || fa.targeted[0].GetContainer().GetService() != "web" {
			t.Fatalf("%s: targets asked %v", tt.name, fa.targeted)
		}
		ms := adj.GetMounts()
		if len(ms) != 2 || ms[0].Destination != "/run/secrets/db_pw" || ms[1].Destination != "/etc/app/cert.pem" {
			t.Fatalf("%s: mounts %v, want one per target", tt.name, ms)
		}
		for _, m := range ms {
			if m.Type != "bind" || m.Source != claim.MountpointSource || !slices.Contains(m.Options, "ro") || slices.Contains(m.Options, "rw") {
				t.Errorf("%s: mount %+v, want a read-only bind of %s", tt.name, m, claim.MountpointSource)
			}
			if m.Type == "tmpfs" || m.Destination == SecretsDir {
				t.Errorf("%s: placeholder mount %+v", tt.name, m)
			}
		}
	}

	adj, _, err := p.CreateContainer(context.Background(), &api.PodSandbox{}, &api.Container{})
	if err != nil || adj != nil {
		t.Errorf("adjusted a container that claims nothing: %v, %v", adj, err)
	}
	if _, _, err := p.CreateContainer(context.Background(), &api.PodSandbox{}, &api.Container{Annotations: map[string]string{ServiceAnnotation: ""}}); err == nil {
		t.Error("empty claim accepted")
	}
	// A target in a volume of the pod is refused by name: the runtime
	// would cover the volume's file with the bind.
	_, _, err = p.CreateContainer(context.Background(), &api.PodSandbox{}, &api.Container{Id: "c3", Name: "app", Annotations: claimWeb,
		Mounts: []*api.Mount{{Destination: "/etc/app", Type: "bind", Source: "/var/lib/kubelet/x", Options: []string{"rbind", "ro"}}}})
	if err == nil || !strings.Contains(err.Error(), "/etc/app/cert.pem") || !strings.Contains(err.Error(), "collides") {
		t.Errorf("create with a target in a volume: %v", err)
	}
	// A claim the agent refuses fails the create: before the container
	// exists.
	_, _, err = p.CreateContainer(context.Background(), &api.PodSandbox{}, &api.Container{Id: "c2", Name: "app", Annotations: map[string]string{ServiceAnnotation: "payments"}})
	if err == nil || !strings.Contains(err.Error(), "NOT_GRANTED") || !strings.Contains(err.Error(), "payments") {
		t.Errorf("create of a claim not granted: %v", err)
	}
}

func TestStartStopContainer(t *testing.T) {
	fa := &fakeAgent{}
	p := New(fa)
	ctr := &api.Container{Id: "c1", Name: "app", Pid: uint32(os.Getpid()), Annotations: map[string]string{ServiceAnnotation: "web"}}
	if err := p.StartContainer(context.Background(), &api.PodSandbox{}, ctr); err != nil {
		t.Fatal(err)
	}
	want := &agent.Container{Id: "c1", Service: "web", Pid: int32(os.Getpid()), Rootfs: "/", Os: "linux",
		Facts: &agent.ContainerFacts{Pod: &agent.PodFacts{LabelsKnown: true}, ContainerdNamespace: "k8s.io"}}
	if len(fa.prepared) != 1 || !fa.prepared[0].GetAttach() || fa.prepared[0].GetContainer().String() != want.String() {
		t.Fatalf("prepared %v, want attach of %v", fa.prepared, want)
	}
	if !reflect.DeepEqual(p.Claims(), map[string]string{"c1": "web"}) {
		t.Fatalf("claims = %v", p.Claims())
	}
	if _, err := p.StopContainer(context.Background(), &api.PodSandbox{}, ctr); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fa.released, []string{"c1"}) || len(p.Claims()) != 0 {
		t.Fatalf("released %v, claims %v", fa.released, p.Claims())
	}
	// Non-claiming containers never reach the agent.
	plain := &api.Container{Id: "c2", Pid: 1}
	p.StartContainer(context.Background(), &api.PodSandbox{}, plain)
	p.RemoveContainer(context.Background(), &api.PodSandbox{}, plain)
	if len(fa.prepared) != 1 || len(fa.released) != 1 {
		t.Fatal("agent called for a container that claims nothing")
	}
}

func TestStartContainerNotGranted(t *testing.T) {
	fa := &fakeAgent{err: errors.New("agent: NOT_GRANTED: no grant")}
	p := New(fa)
	ctr := &api.Container{Id: "c1", Name: "app", Pid: uint32(os.Getpid()), Annotations: map[string]string{ServiceAnnotation: "web"}}
	err := p.StartContainer(context.Background(), &api.PodSandbox{}, ctr)
	if err == nil || !strings.Contains(err.Error(), `service "web"`) {
		t.Fatalf("err = %v, want one naming the service", err)
	}
}

func TestSynchronizeReleasesStopped(t *testing.T) {
	fa := &fakeAgent{held: []string{"running", "stopped", "ctr-outside-cri"}}
	p := New(fa)
	claim := map[string]string{ServiceAnnotation: "web"}
	_, err := p.Synchronize(context.Background(), nil, []*api.Container{
		{Id: "running", State: api.ContainerState_CONTAINER_RUNNING, Annotations: claim},
		{Id: "stopped", State: api.ContainerState_CONTAINER_STOPPED, Annotations: claim},
		{Id: "plain", State: api.ContainerState_CONTAINER_STOPPED},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fa.released, []string{"stopped"}) {
		t.Fatalf("released %v, want only the stopped claiming container", fa.released)
	}
	if !reflect.DeepEqual(p.Claims(), map[string]string{"running": "web"}) {
		t.Fatalf("claims = %v", p.Claims())
	}
}

func TestParseIDMap(t *testing.T) {
	got, err := ParseIDMap("         0     100000      65536\n      65536    1000   1\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []*agent.IDMapping{{ContainerId: 0, HostId: 100000, Size: 65536}, {ContainerId: 65536, HostId: 1000, Size: 1}}
	if len(got) != 2 || got[0].String() != want[0].String() || got[1].String() != want[1].String() {
		t.Fatalf("got %v", got)
	}
	for _, bad := range []string{"0 1", "0 1 x", "0 1 99999999999"} {
		if _, err := ParseIDMap(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseIDMap(f *testing.F) {
	f.Add("0 100000 65536\n")
	f.Add("0 0 4294967295")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseIDMap(s)
		if err == nil && len(m) > strings.Count(s, "\n")+1 {
			t.Fatal("more mappings than lines")
		}
	})
}
