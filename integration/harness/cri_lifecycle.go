//go:build linux

package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CreateContainer creates a container in pod without starting it, for
// tests that act between CRI's create and start. It is removed when the
// test ends.
func (r *CRI) CreateContainer(ctx context.Context, pod *Pod, name, image string, o ContainerOptions, cmd ...string) (string, error) {
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
		return "", fmt.Errorf("create container %s: %w", name, err)
	}
	id := created.ContainerId
	r.c.t.Cleanup(func() {
		ctx := context.Background()
		r.rt.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: id})
		r.rt.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: id})
	})
	return id, nil
}

// StartContainer starts a container made by CreateContainer.
func (r *CRI) StartContainer(ctx context.Context, id string) error {
	_, err := r.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: id})
	return err
}

// ContainerStatus is CRI's status of container id.
func (r *CRI) ContainerStatus(ctx context.Context, id string) (*cri.ContainerStatus, error) {
	resp, err := r.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return nil, err
	}
	return resp.Status, nil
}

// WaitState polls container id's status (CRI has no wait call) until it
// is in state or ctx ends.
func (r *CRI) WaitState(ctx context.Context, id string, state cri.ContainerState) (*cri.ContainerStatus, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := r.ContainerStatus(ctx, id)
		if err != nil {
			return nil, err
		}
		if st.State == state {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("container %s is %s, not %s: %w", id, st.State, state, ctx.Err())
		case <-tick.C:
		}
	}
}

// Log is the content of a container's log so far (CRI's timestamps and
// stream tags dropped).
func (r *CRI) Log(pod *Pod, name string) (string, error) {
	return readCRILog(filepath.Join(pod.Config.LogDirectory, name+".log"))
}

// readCRILog reads a CRI log file: each line is "<time> <stream> <P|F>
// <content>", a partial (P) line continued by the next.
func readCRILog(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var out strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.SplitN(line, " ", 4); len(f) == 4 {
			out.WriteString(f[3])
			if f[2] == "F" {
				out.WriteByte('\n')
			}
		}
	}
	return out.String(), nil
}

// RemoveContainer stops and removes container id.
func (r *CRI) RemoveContainer(ctx context.Context, id string) error {
	r.rt.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: id})
	_, err := r.rt.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: id})
	return err
}
