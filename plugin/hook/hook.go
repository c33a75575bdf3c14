package hook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/mounter"
	"github.com/lockbox-project/lockbox/plugin/runtime"
)

// Agent is the part of the agent's local API client the hook uses.
type Agent interface {
	Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error)
	Release(ctx context.Context, containerID string) error
	Close() error
}

// Hook runs one OCI hook event.
type Hook struct {
	Socket string
	Dial   func(socket string) (Agent, error)
	// Attach moves the received mounts into place under rootfs from the
	// current mount namespace (linux.AttachHandovers).
	Attach func(rootfs string, hs []mounter.Handover) error
	// Timeout bounds the agent call; zero means 30 s.
	Timeout time.Duration
}

// Events the hook understands.
const (
	CreateContainer = "createContainer"
	Poststop        = "poststop"
)

// Run handles event with the OCI state read from stdin. It returns a
// message-bearing error for the runtime to show; it never includes secret
// data.
func (h *Hook) Run(event string, stdin io.Reader) error {
	var st specs.State
	if err := json.NewDecoder(io.LimitReader(stdin, 1<<20)).Decode(&st); err != nil {
		return fmt.Errorf("read OCI state from stdin: %w", err)
	}
	if st.ID == "" {
		return errors.New("OCI state has no container id")
	}
	switch event {
	case CreateContainer:
		return h.create(&st)
	case Poststop:
		return h.release(&st)
	default:
		return fmt.Errorf("unknown hook event %q (want %s or %s)", event, CreateContainer, Poststop)
	}
}

func (h *Hook) timeout() time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	return 30 * time.Second
}

func (h *Hook) create(st *specs.State) error {
	// hooks.d setups may run the hook for every container: one that claims
	// nothing is none of our business. The annotation in the state is the
	// one runc read from config.json.
	if _, ok := st.Annotations[runtime.ServiceAnnotation]; !ok {
		return nil
	}
	claim, err := runtime.ReadClaim(st.Bundle)
	if err != nil {
		return fmt.Errorf("container %s: %w", st.ID, err)
	}
	if claim == nil {
		return fmt.Errorf("container %s: state claims a service but %s/config.json does not", st.ID, st.Bundle)
	}
	rootfs, err := Rootfs(st.Bundle, claim.Spec)
	if err != nil {
		return fmt.Errorf("container %s: %w", st.ID, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.timeout())
	defer cancel()
	a, err := h.Dial(h.Socket)
	if err != nil {
		return fmt.Errorf("container %s claims service %q: lockbox agent not reachable: %w", st.ID, claim.Service, err)
	}
	defer a.Close()
	// st.Pid is the container's process as the runtime numbers it for
	// the hook (runc: 1, the hook runs in the container's pid namespace;
	// crun: 0). The agent finds the process from it and from this
	// process's ancestry, to know when the container ends; the hook
	// attaches the fds itself.
	resp, files, err := a.Prepare(ctx, &agent.PrepareRequest{Container: claim.Container(st.ID, st.Pid, rootfs)})
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if err != nil {
		return fmt.Errorf("container %s claims service %q: %w", st.ID, claim.Service, err)
	}
	hs := make([]mounter.Handover, 0, len(resp.GetMounts()))
	for _, m := range resp.GetMounts() {
		i := int(m.GetFdIndex())
		if i < 0 || i >= len(files) {
			return fmt.Errorf("container %s: agent sent mount %s without its fd", st.ID, m.GetTarget())
		}
		hs = append(hs, mounter.Handover{Target: m.GetTarget(), File: files[i]})
	}
	if err := h.Attach(rootfs, hs); err != nil {
		// The agent holds a mount for a container that will not start: let
		// it go now rather than at a delete that may never come.
		a.Release(ctx, st.ID)
		return fmt.Errorf("container %s claims service %q: %w", st.ID, claim.Service, err)
	}
	return nil
}

func (h *Hook) release(st *specs.State) error {
	if _, ok := st.Annotations[runtime.ServiceAnnotation]; !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.timeout())
	defer cancel()
	a, err := h.Dial(h.Socket)
	if err != nil {
		return fmt.Errorf("release %s: lockbox agent not reachable: %w", st.ID, err)
	}
	defer a.Close()
	if err := a.Release(ctx, st.ID); err != nil {
		return fmt.Errorf("release %s: %w", st.ID, err)
	}
	return nil
}

// Rootfs is where the container's root is mounted while its
// createContainer hooks run: the spec's root.path, relative to the bundle
// unless absolute. The hook runs in the container's mount namespace before
// pivot_root, so that path names the container's root there. It is not the
// hook's working directory: runc runs hooks in the rootfs, but crun runs
// them in the bundle, and a hook that attached under its working directory
// would mount the secrets where the container never looks.
func Rootfs(bundle string, spec *specs.Spec) (string, error) {
	if spec.Root == nil || spec.Root.Path == "" {
		return "", errors.New("bundle config has no root.path")
	}
	p := spec.Root.Path
	if !filepath.IsAbs(p) {
		if !filepath.IsAbs(bundle) {
			return "", fmt.Errorf("relative root.path %q with a relative bundle %q", p, bundle)
		}
		p = filepath.Join(bundle, p)
	}
	return filepath.Clean(p), nil
}
