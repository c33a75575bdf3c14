//go:build linux

package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Crictl drives this containerd's CRI with the real crictl (hack/deps.sh
// installs it), from JSON configs it writes, as an operator would.
type Crictl struct {
	c   *Containerd
	bin string
	cfg string
	dir string
}

// Crictl returns a crictl for c (started with Options.CRI) and imports the
// pause image into the k8s.io namespace.
func (c *Containerd) Crictl() *Crictl {
	c.t.Helper()
	bin := need(c.t, filepath.Join(ToolsDir(), "crictl"), "make deps")
	dir := filepath.Join(c.Dir, "crictl")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	// Its own config: never the host's /etc/crictl.yaml.
	cfg := filepath.Join(dir, "crictl.yaml")
	ep := "unix://" + c.Address
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: 60\n", ep, ep)), 0o600); err != nil {
		c.t.Fatal(err)
	}
	c.importPause()
	return &Crictl{c: c, bin: bin, cfg: cfg, dir: dir}
}

// CrictlError is a failed crictl command; Stderr says why.
type CrictlError struct {
	Args   []string
	Err    error
	Stderr string
}

func (e *CrictlError) Error() string {
	return fmt.Sprintf("crictl %s: %v: %s", strings.Join(e.Args, " "), e.Err, strings.TrimSpace(e.Stderr))
}

func (e *CrictlError) Unwrap() error { return e.Err }

// Run runs crictl with args and returns its stdout.
func (k *Crictl) Run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, k.bin, append([]string{"--config", k.cfg}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), &CrictlError{Args: args, Err: err, Stderr: errb.String()}
	}
	return out.String(), nil
}

// writeJSON writes v as a JSON config file crictl reads.
func (k *Crictl) writeJSON(name string, v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	p := filepath.Join(k.dir, name)
	return p, os.WriteFile(p, b, 0o600)
}

// CrictlPod is a pod started by "crictl runp".
type CrictlPod struct {
	ID         string
	ConfigPath string
	LogDir     string
}

// RunPod runs "crictl runp --runtime handler" for a host-network pod with
// annotations in Kubernetes namespace "default"; the pod is stopped and
// removed when the test ends.
func (k *Crictl) RunPod(ctx context.Context, name, handler string, annotations map[string]string) (*CrictlPod, error) {
	return k.RunPodWith(ctx, name, handler, PodOptions{Annotations: annotations})
}

// PodOptions shape a pod's config for RunPodWith.
type PodOptions struct {
	// Namespace is the pod's Kubernetes namespace ("" is "default").
	Namespace   string
	Labels      map[string]string
	Annotations map[string]string
}

// RunPodWith is RunPod for a pod shaped by o.
func (k *Crictl) RunPodWith(ctx context.Context, name, handler string, o PodOptions) (*CrictlPod, error) {
	ns := o.Namespace
	if ns == "" {
		ns = "default"
	}
	logDir := filepath.Join(k.dir, "logs", name)
	cfg := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Uid: name + "-uid", Namespace: ns},
		LogDirectory: logDir,
		Labels:       o.Labels,
		Annotations:  o.Annotations,
		Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{
			NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE},
		}},
	}
	path, err := k.writeJSON("pod-"+name+".json", cfg)
	if err != nil {
		return nil, err
	}
	args := []string{"runp"}
	if handler != "" {
		args = append(args, "--runtime", handler)
	}
	out, err := k.Run(ctx, append(args, path)...)
	if err != nil {
		return nil, err
	}
	p := &CrictlPod{ID: strings.TrimSpace(out), ConfigPath: path, LogDir: logDir}
	k.c.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		k.Run(ctx, "stopp", p.ID)
		k.Run(ctx, "rmp", "--force", p.ID)
	})
	return p, nil
}

// StopPod stops and removes pod now.
func (k *Crictl) StopPod(ctx context.Context, p *CrictlPod) error {
	if _, err := k.Run(ctx, "stopp", p.ID); err != nil {
		return err
	}
	_, err := k.Run(ctx, "rmp", p.ID)
	return err
}

// CrictlContainer shapes one container config for "crictl create".
type CrictlContainer struct {
	Name        string
	Image       string
	Command     []string
	Annotations map[string]string
	// RunAsUser and RunAsGroup set the process's uid and gid (nil: the
	// image's).
	RunAsUser, RunAsGroup *int64
	ReadonlyRootfs        bool
}

// Create runs "crictl create --no-pull" in pod and returns the container ID.
func (k *Crictl) Create(ctx context.Context, pod *CrictlPod, o CrictlContainer) (string, error) {
	sc := &cri.LinuxContainerSecurityContext{
		ReadonlyRootfs:   o.ReadonlyRootfs,
		NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE},
	}
	if o.RunAsUser != nil {
		sc.RunAsUser = &cri.Int64Value{Value: *o.RunAsUser}
	}
	if o.RunAsGroup != nil {
		sc.RunAsGroup = &cri.Int64Value{Value: *o.RunAsGroup}
	}
	cfg := &cri.ContainerConfig{
		Metadata:    &cri.ContainerMetadata{Name: o.Name},
		Image:       &cri.ImageSpec{Image: o.Image},
		Command:     o.Command,
		LogPath:     o.Name + ".log",
		Annotations: o.Annotations,
		Linux:       &cri.LinuxContainerConfig{SecurityContext: sc},
	}
	path, err := k.writeJSON("ctr-"+o.Name+".json", cfg)
	if err != nil {
		return "", err
	}
	out, err := k.Run(ctx, "create", "--no-pull", pod.ID, path, pod.ConfigPath)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// ContainerState is what "crictl inspect" says of a container's state.
type ContainerState struct {
	State    string `json:"state"`
	ExitCode int32  `json:"exitCode"`
	Reason   string `json:"reason"`
	Message  string `json:"message"`
}

// Inspect returns the container's state as "crictl inspect" reports it.
func (k *Crictl) Inspect(ctx context.Context, id string) (*ContainerState, error) {
	out, err := k.Run(ctx, "inspect", id)
	if err != nil {
		return nil, err
	}
	var v struct {
		Status ContainerState `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return nil, fmt.Errorf("crictl inspect %s: %w: %s", id, err, out)
	}
	return &v.Status, nil
}

// WaitExited polls "crictl inspect" until the container has exited (CRI
// has no wait call; kubelet polls too) and returns its exit code.
func (k *Crictl) WaitExited(ctx context.Context, id string) (int32, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := k.Inspect(ctx, id)
		if err != nil {
			return 0, err
		}
		if st.State == cri.ContainerState_CONTAINER_EXITED.String() {
			return st.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("container %s still %s: %w", id, st.State, ctx.Err())
		case <-tick.C:
		}
	}
}

// Logs returns "crictl logs": the container's stdout, then its stderr.
func (k *Crictl) Logs(ctx context.Context, id string) (string, error) {
	cmd := exec.CommandContext(ctx, k.bin, "--config", k.cfg, "logs", id)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", &CrictlError{Args: []string{"logs", id}, Err: err, Stderr: errb.String()}
	}
	return out.String() + errb.String(), nil
}

// RunContainer creates and starts a container in pod, waits for its exit
// and returns its logs and exit code; the container is removed afterwards
// (crictl stop, rm). A failed create or start is returned as is.
func (k *Crictl) RunContainer(ctx context.Context, pod *CrictlPod, o CrictlContainer) (string, int32, error) {
	id, err := k.Create(ctx, pod, o)
	if err != nil {
		return "", 0, err
	}
	defer func() {
		ctx := context.WithoutCancel(ctx)
		k.Run(ctx, "stop", id)
		k.Run(ctx, "rm", id)
	}()
	if _, err := k.Run(ctx, "start", id); err != nil {
		return "", 0, err
	}
	code, err := k.WaitExited(ctx, id)
	if err != nil {
		return "", 0, err
	}
	out, err := k.Logs(ctx, id)
	return out, code, err
}
