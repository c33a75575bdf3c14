package nri

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"

	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/api/claim"
)

// Agent is what the plugin needs of the agent. The agent's local API
// handler and its client both have these methods, so the plugin runs the
// same in-process and standalone.
type Agent interface {
	Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error)
	Release(ctx context.Context, containerID string) error
	List(ctx context.Context) (*agent.ListResponse, error)
	// Targets says which targets a claim would get before the container
	// exists (agent.TargetsRequest).
	Targets(ctx context.Context, req *agent.TargetsRequest) (*agent.TargetsResponse, error)
}

// Plugin is the NRI plugin. Create it with New.
type Plugin struct {
	agent Agent
	// procRoot is /proc; tests point it elsewhere.
	procRoot string

	mu sync.Mutex
	// claims maps the IDs of claiming containers to their service.
	claims map[string]string
	// synced is closed after the first Synchronize: the plugin is
	// registered and sees every container created from then on.
	synced     chan struct{}
	syncedOnce sync.Once
	// sync is Synchronize's state (sync.go).
	sync *syncer
}

// New returns a plugin that serves NRI events with a.
func New(a Agent) *Plugin {
	return &Plugin{agent: a, procRoot: "/proc", claims: map[string]string{}, synced: make(chan struct{}), sync: newSyncer()}
}

// Synced is closed once the runtime has synchronized with the plugin:
// from then on no CRI container starts without the plugin seeing it.
func (p *Plugin) Synced() <-chan struct{} { return p.synced }

// Options say where and under which name the plugin registers.
type Options struct {
	// Socket is containerd's NRI socket; empty means NRI's default
	// (/var/run/nri/nri.sock).
	Socket string
	// Name and Index register the plugin; defaults DefaultName and "10".
	Name, Index string
}

// Run connects to the runtime and serves events until ctx ends or the
// runtime goes away.
func (p *Plugin) Run(ctx context.Context, o Options) error {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.Index == "" {
		o.Index = "10"
	}
	opts := []stub.Option{stub.WithPluginName(o.Name), stub.WithPluginIdx(o.Index)}
	if o.Socket != "" {
		opts = append(opts, stub.WithSocketPath(o.Socket))
	}
	s, err := stub.New(p, opts...)
	if err != nil {
		return fmt.Errorf("nri plugin: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.setLife(ctx)
	if err := s.Run(ctx); err != nil {
		return fmt.Errorf("nri plugin: %w", err)
	}
	return nil
}

// service returns the claimed service: the container's annotation, else
// the pod's.
func service(pod *api.PodSandbox, ctr *api.Container) (string, bool) {
	if s, ok := ctr.GetAnnotations()[claim.ServiceAnnotation]; ok {
		return s, true
	}
	s, ok := pod.GetAnnotations()[claim.ServiceAnnotation]
	return s, ok
}

// CreateContainer gives every target of a claiming container its
// mountpoint: a read-only bind of the agent's empty file
// (claim.MountpointMounts), which the runtime makes, file and directories,
// before the root turns read-only. NRI does not say whether the root is
// read-only, so it is taken to be (claim.NeedsMountpoints): the agent asks
// nothing of the container's root. A claim the agent could not serve
// fails here, before the container is created.
func (p *Plugin) CreateContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	svc, ok := service(pod, ctr)
	if !ok {
		return nil, nil, nil
	}
	if svc == "" {
		return nil, nil, fmt.Errorf("container %s: annotation %s is empty", ctr.GetName(), claim.ServiceAnnotation)
	}
	adj := &api.ContainerAdjustment{}
	if !claim.NeedsMountpoints(true, userNamespaced(ctr)) {
		return adj, nil, nil
	}
	resp, err := p.agent.Targets(ctx, &agent.TargetsRequest{Container: &agent.Container{
		Id: ctr.GetId(), Service: svc, Os: "linux", ReadonlyRootfs: true, Facts: facts(pod, ctr),
	}})
	if err != nil {
		return nil, nil, fmt.Errorf("container %s claims service %q: %w", ctr.GetName(), svc, err)
	}
	mounts := make([]claim.Mount, 0, len(ctr.GetMounts()))
	for _, m := range ctr.GetMounts() {
		mounts = append(mounts, claim.Mount{Destination: m.GetDestination(), Type: m.GetType(), Source: m.GetSource(), Options: m.GetOptions()})
	}
	// The runtime would cover such a mount with the bind before the agent
	// could see it: refuse here, by name.
	if t, m, ok := claim.Collision(resp.GetTargets(), mounts); ok {
		return nil, nil, fmt.Errorf("container %s claims service %q: secret target %s collides with the mount at %s the container already has; choose another target", ctr.GetName(), svc, t, m)
	}
	for _, m := range claim.MountpointMounts(resp.GetTargets()) {
		adj.AddMount(&api.Mount{Destination: m.Destination, Type: m.Type, Source: m.Source, Options: m.Options})
	}
	return adj, nil, nil
}

// criNamespace is the containerd namespace of every container containerd's
// CRI creates (its constants.K8sContainerdNamespace), the only containers
// NRI reports.
const criNamespace = "k8s.io"

// facts are the claim rules' facts of a CRI container, from what NRI
// reports and the pod cannot forge: the pod's namespace and labels from
// its sandbox (kubelet's pod metadata), and the image as containerd
// resolved it for the container. Never from an annotation: NRI's container
// annotations are the spec's with the CRI container config's copied over
// them (containerd v2.4.2, internal/cri/nri/nri_api_linux.go,
// criContainer.GetAnnotations), so there a pod's own
// io.kubernetes.cri.sandbox-namespace would win.
func facts(pod *api.PodSandbox, ctr *api.Container) *agent.ContainerFacts {
	return &agent.ContainerFacts{
		Pod:                 &agent.PodFacts{Namespace: pod.GetNamespace(), Labels: pod.GetLabels(), LabelsKnown: true},
		ContainerdNamespace: criNamespace,
		Image:               ctr.GetImage().GetName(),
	}
}

// userNamespaced reports whether a CRI container runs in a user namespace:
// one shows as a "user" namespace among its Linux namespaces.
func userNamespaced(ctr *api.Container) bool {
	for _, ns := range ctr.GetLinux().GetNamespaces() {
		if ns.GetType() == "user" {
			return true
		}
	}
	return false
}

// StartContainer has the agent attach the secrets by the container's pid.
// An error here fails the start: fail closed.
func (p *Plugin) StartContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	svc, ok := service(pod, ctr)
	if !ok {
		return nil
	}
	pid := int(ctr.GetPid())
	if pid <= 0 {
		return fmt.Errorf("container %s claims service %q: runtime gave no pid", ctr.GetName(), svc)
	}
	c := &agent.Container{Id: ctr.GetId(), Service: svc, Pid: int32(pid), Rootfs: "/", Os: "linux", Facts: facts(pod, ctr)}
	uid, gid, err := p.idMappings(pid)
	if err != nil {
		return fmt.Errorf("container %s claims service %q: %w", ctr.GetName(), svc, err)
	}
	c.UidMappings, c.GidMappings = uid, gid
	resp, files, err := p.agent.Prepare(ctx, &agent.PrepareRequest{Container: c, Attach: true})
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		return fmt.Errorf("container %s claims service %q: %w", ctr.GetName(), svc, err)
	}
	if !resp.AllAttached() {
		p.agent.Release(ctx, ctr.GetId())
		return fmt.Errorf("container %s: agent left mounts unattached", ctr.GetName())
	}
	p.mu.Lock()
	p.claims[ctr.GetId()] = svc
	p.mu.Unlock()
	return nil
}

// StopContainer wipes the secrets of a claiming container. NRI calls it
// also when the container exited by itself.
func (p *Plugin) StopContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) ([]*api.ContainerUpdate, error) {
	return nil, p.release(ctx, pod, ctr)
}

// RemoveContainer wipes whatever StopContainer could not.
func (p *Plugin) RemoveContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	return p.release(ctx, pod, ctr)
}

func (p *Plugin) release(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	if _, ok := service(pod, ctr); !ok {
		return nil
	}
	p.mu.Lock()
	delete(p.claims, ctr.GetId())
	p.mu.Unlock()
	if err := p.agent.Release(ctx, ctr.GetId()); err != nil {
		return fmt.Errorf("release container %s: %w", ctr.GetName(), err)
	}
	return nil
}

// Synchronize rebuilds the claim set from the runtime's containers and
// settles it with the agent: it wipes what stopped claiming containers
// still hold and evicts the running ones it does not hold, which started
// while the plugin was away (sync.go). Containers the runtime does not
// list are left alone: the runc wrapper may have claimed them outside CRI.
func (p *Plugin) Synchronize(ctx context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	return p.synchronize(ctx, pods, ctrs)
}

// Claims returns a copy of the claiming containers the plugin knows, by ID.
func (p *Plugin) Claims() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.claims))
	for k, v := range p.claims {
		out[k] = v
	}
	return out
}

// idMappings reads pid's uid and gid maps when it lives in a user
// namespace other than ours. NRI does not carry the spec's mappings, but
// the kernel's view is the one that counts anyway.
func (p *Plugin) idMappings(pid int) (uid, gid []*agent.IDMapping, err error) {
	proc := p.procRoot + "/" + strconv.Itoa(pid)
	theirs, err := os.Readlink(proc + "/ns/user")
	if err != nil {
		return nil, nil, fmt.Errorf("user namespace of pid %d: %w", pid, err)
	}
	ours, err := os.Readlink(p.procRoot + "/self/ns/user")
	if err != nil {
		return nil, nil, fmt.Errorf("own user namespace: %w", err)
	}
	if theirs == ours {
		return nil, nil, nil
	}
	if uid, err = readIDMap(proc + "/uid_map"); err != nil {
		return nil, nil, err
	}
	if gid, err = readIDMap(proc + "/gid_map"); err != nil {
		return nil, nil, err
	}
	return uid, gid, nil
}

// readIDMap parses a /proc/<pid>/[ug]id_map: "inside outside count" lines.
func readIDMap(p string) ([]*agent.IDMapping, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return ParseIDMap(string(b))
}

// ParseIDMap parses the text of a uid_map or gid_map file.
func ParseIDMap(s string) ([]*agent.IDMapping, error) {
	var out []*agent.IDMapping
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("id map line %q: want 3 fields", line)
		}
		var n [3]uint32
		for i, x := range f {
			v, err := strconv.ParseUint(x, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("id map line %q: %w", line, err)
			}
			n[i] = uint32(v)
		}
		out = append(out, &agent.IDMapping{ContainerId: n[0], HostId: n[1], Size: n[2]})
	}
	return out, nil
}
