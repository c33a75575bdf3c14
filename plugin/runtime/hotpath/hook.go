package hotpath

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/lockbox-project/lockbox/api/claim"
	"github.com/lockbox-project/lockbox/plugin/runtime/agentconn"
)

// Events the hook understands.
const (
	CreateContainer = "createContainer"
	Poststop        = "poststop"
)

// Handover is one mount the agent handed over for the hook to attach: the
// detached mount's fd and where it goes in the container.
type Handover struct {
	Target string
	File   *os.File
}

// Hook runs one OCI hook event: createContainer has the agent build the
// container's secrets and attaches them from inside the container's mount
// namespace, where runc and crun run createContainer hooks; poststop has
// the agent wipe them.
type Hook struct {
	Socket string
	Dial   Dialer
	// Attach moves the received mounts into place under rootfs from the
	// current mount namespace (linux.AttachHandovers). The hook closes the
	// files afterwards.
	Attach func(rootfs string, hs []Handover) error
	// Timeout bounds the agent call; zero means 30 s.
	Timeout time.Duration
}

// ociState is the part of the OCI state (on the hook's stdin) the hook
// reads.
type ociState struct {
	ID          string            `json:"id"`
	Pid         int               `json:"pid"`
	Bundle      string            `json:"bundle"`
	Annotations map[string]string `json:"annotations"`
}

// Run handles event with the OCI state read from stdin. It returns a
// message-bearing error for the runtime to show; it never includes secret
// data.
func (h *Hook) Run(event string, stdin io.Reader) error {
	var st ociState
	if err := json.NewDecoder(io.LimitReader(stdin, 1<<20)).Decode(&st); err != nil {
		return fmt.Errorf("read OCI state from stdin: %w", err)
	}
	if st.ID == "" {
		return errors.New("OCI state has no container id")
	}
	if event != CreateContainer && event != Poststop {
		return fmt.Errorf("unknown hook event %q (want %s or %s)", event, CreateContainer, Poststop)
	}
	// hooks.d setups may run the hook for every container: one that claims
	// nothing is none of our business, and neither is a CRI pod's pause
	// container, which carries the pod's annotations but runs no workload.
	// The annotations in the state are the ones the runtime read from
	// config.json.
	if _, ok := st.Annotations[claim.ServiceAnnotation]; !ok || st.Annotations[CRIContainerType] == "sandbox" {
		return nil
	}
	if event == Poststop {
		return h.release(&st)
	}
	return h.create(&st)
}

func (h *Hook) timeout() time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	return 30 * time.Second
}

func (h *Hook) create(st *ociState) error {
	claim, err := ReadClaim(st.Bundle)
	if err != nil {
		return fmt.Errorf("container %s: %w", st.ID, err)
	}
	if claim == nil {
		return fmt.Errorf("container %s: state claims a service but %s/config.json does not", st.ID, st.Bundle)
	}
	// The claim rules' containerd namespace: the hook is not told runc's
	// root, but containerd names the bundle after it.
	claim.Facts.ContainerdNamespace = NamespaceFromBundle(st.Bundle, st.ID)
	rootfs, err := Rootfs(st.Bundle, claim.RootPath)
	if err != nil {
		return fmt.Errorf("container %s: %w", st.ID, err)
	}
	a, err := h.Dial(h.Socket, h.timeout())
	if err != nil {
		return fmt.Errorf("container %s claims service %q: lockbox agent not reachable: %w", st.ID, claim.Service, err)
	}
	defer a.Close()
	// st.Pid is the container's process as the runtime numbers it for
	// the hook (runc: 1, the hook runs in the container's pid namespace;
	// crun: 0). The agent finds the process from it and from this
	// process's ancestry, to know when the container ends; the hook
	// attaches the fds itself.
	mounts, files, err := a.Prepare(claim.Container(st.ID, st.Pid, rootfs), false)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if err != nil {
		return fmt.Errorf("container %s claims service %q: %w", st.ID, claim.Service, err)
	}
	hs := make([]Handover, 0, len(mounts))
	for _, m := range mounts {
		i, ok := m.Fd(len(files))
		if !ok {
			return fmt.Errorf("container %s: agent sent mount %s without its fd", st.ID, m.Target)
		}
		hs = append(hs, Handover{Target: m.Target, File: files[i]})
	}
	if err := h.Attach(rootfs, hs); err != nil {
		// The agent holds a mount for a container that will not start: let
		// it go now rather than at a delete that may never come.
		// The hook runs in the container's mount namespace: the agent
		// knows it for this container's by that.
		a.Release(st.ID, agentconn.Process{})
		return fmt.Errorf("container %s claims service %q: %w", st.ID, claim.Service, err)
	}
	return nil
}

func (h *Hook) release(st *ociState) error {
	a, err := h.Dial(h.Socket, h.timeout())
	if err != nil {
		return fmt.Errorf("release %s: lockbox agent not reachable: %w", st.ID, err)
	}
	defer a.Close()
	// poststop: the container's processes are gone, and the agent
	// releases an ended container's mount to any caller.
	if err := a.Release(st.ID, agentconn.Process{}); err != nil {
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
func Rootfs(bundle, rootPath string) (string, error) {
	if rootPath == "" {
		return "", errors.New("bundle config has no root.path")
	}
	p := rootPath
	if !filepath.IsAbs(p) {
		if !filepath.IsAbs(bundle) {
			return "", fmt.Errorf("relative root.path %q with a relative bundle %q", p, bundle)
		}
		p = filepath.Join(bundle, p)
	}
	return filepath.Clean(p), nil
}
