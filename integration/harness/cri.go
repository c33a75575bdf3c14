//go:build linux

package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PauseImage is the sandbox image containerd 2.4.2 pins; tests import a
// locally built one under this name so that nothing is pulled.
const PauseImage = "registry.k8s.io/pause:3.10.2"

// CRI is a small CRI client for tests: host-network pods (no CNI) whose
// containers run to completion and whose logs are read back.
type CRI struct {
	c   *Containerd
	rt  cri.RuntimeServiceClient
	dir string
}

// importPause imports a locally built pause image into CRI's namespace
// under the name containerd pins, so that nothing is pulled.
func (c *Containerd) importPause() {
	c.Import("k8s.io", ImageConfig{Name: PauseImage, Entrypoint: []string{"/bin/sleep", "2147483647"}})
}

// CRI connects a CRI client to c (started with Options.CRI) and imports the
// pause image into the k8s.io namespace.
func (c *Containerd) CRI() *CRI {
	c.t.Helper()
	conn, err := grpc.NewClient("unix://"+c.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatalf("cri client: %v", err)
	}
	c.t.Cleanup(func() { conn.Close() })
	c.importPause()
	dir := filepath.Join(c.Dir, "pods")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	return &CRI{c: c, rt: cri.NewRuntimeServiceClient(conn), dir: dir}
}

// Pod is one running pod sandbox.
type Pod struct {
	ID     string
	Config *cri.PodSandboxConfig
}

// RunPod starts a host-network pod with the given annotations under the
// runtime handler (empty: the default runtime).
func (r *CRI) RunPod(ctx context.Context, name, handler string, annotations map[string]string) (*Pod, error) {
	cfg := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Uid: name + "-uid", Namespace: "default"},
		LogDirectory: filepath.Join(r.dir, name),
		Annotations:  annotations,
		Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{
			NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE},
		}},
	}
	resp, err := r.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: cfg, RuntimeHandler: handler})
	if err != nil {
		return nil, fmt.Errorf("run pod %s: %w", name, err)
	}
	r.c.t.Cleanup(func() {
		ctx := context.Background()
		r.rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: resp.PodSandboxId})
		r.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId})
	})
	return &Pod{ID: resp.PodSandboxId, Config: cfg}, nil
}

// ContainerOptions shape one CRI container.
type ContainerOptions struct {
	Annotations    map[string]string
	ReadonlyRootfs bool
}

// RunContainer creates and starts a container in pod, waits for it to
// exit and returns its log (the content of each line, without CRI's
// timestamps) and its exit code. The container is removed afterwards.
func (r *CRI) RunContainer(ctx context.Context, pod *Pod, name, image string, o ContainerOptions, cmd ...string) (string, int32, error) {
	cfg := &cri.ContainerConfig{
		Metadata:    &cri.ContainerMetadata{Name: name},
		Image:       &cri.ImageSpec{Image: image},
		Command:     cmd,
		LogPath:     name + ".log",
		Annotations: o.Annotations,
		Linux: &cri.LinuxContainerConfig{SecurityContext: &cri.LinuxContainerSecurityContext{
			ReadonlyRootfs:   o.ReadonlyRootfs,
			NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE},
		}},
	}
	created, err := r.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod.ID, Config: cfg, SandboxConfig: pod.Config})
	if err != nil {
		return "", 0, fmt.Errorf("create container %s: %w", name, err)
	}
	id := created.ContainerId
	defer r.rt.RemoveContainer(context.WithoutCancel(ctx), &cri.RemoveContainerRequest{ContainerId: id})
	if _, err := r.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: id}); err != nil {
		return "", 0, fmt.Errorf("start container %s: %w", name, err)
	}
	// CRI has no wait call; poll the status (what kubelet does too).
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var st *cri.ContainerStatus
	for {
		resp, err := r.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			return "", 0, fmt.Errorf("status of %s: %w", name, err)
		}
		if st = resp.Status; st.State == cri.ContainerState_CONTAINER_EXITED {
			break
		}
		select {
		case <-ctx.Done():
			return "", 0, ctx.Err()
		case <-tick.C:
		}
	}
	b, err := os.ReadFile(filepath.Join(pod.Config.LogDirectory, cfg.LogPath))
	if err != nil {
		return "", st.ExitCode, fmt.Errorf("log of %s: %w", name, err)
	}
	// Each CRI log line is "<time> <stream> <P|F> <content>".
	var out strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.SplitN(line, " ", 4); len(f) == 4 {
			out.WriteString(f[3])
			if f[2] == "F" {
				out.WriteByte('\n')
			}
		}
	}
	return out.String(), st.ExitCode, nil
}
