package runtime

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lockbox-project/lockbox/api/agent"
)

// ServiceAnnotation is the OCI annotation by which a container claims a
// service.
const ServiceAnnotation = "lockbox.service"

// SecretsDir is where secrets go when a reference names no absolute target.
const SecretsDir = "/run/secrets"

// ErrEmptyService is returned for a bundle that carries the annotation with
// no value: the container meant to claim something, so it must not start
// without it.
var ErrEmptyService = errors.New("annotation " + ServiceAnnotation + " is empty")

// Claim is a bundle whose container claims a service.
type Claim struct {
	Service string
	Spec    *specs.Spec
	// Raw is config.json as read, kept so that a spec change can rewrite
	// only the keys it touches.
	Raw  []byte
	Path string
}

// criContainerType is the annotation by which containerd's CRI marks a pod's
// sandbox (pause) container.
const criContainerType = "io.kubernetes.cri.container-type"

// annotationKey is what the fast path looks for before decoding anything.
var annotationKey = []byte(`"` + ServiceAnnotation + `"`)

// ReadClaim reads bundle/config.json and returns its claim, or nil when the
// container claims no service. The common case, a container that claims
// nothing, costs one read and one byte search: no JSON decoding.
func ReadClaim(bundle string) (*Claim, error) {
	p := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read bundle config: %w", err)
	}
	if !bytes.Contains(raw, annotationKey) {
		return nil, nil
	}
	var spec specs.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, fmt.Errorf("decode bundle config %s: %w", p, err)
	}
	service, ok := spec.Annotations[ServiceAnnotation]
	if !ok {
		// The key appeared elsewhere (an env value, a label): no claim.
		return nil, nil
	}
	if spec.Annotations[criContainerType] == "sandbox" {
		// A CRI runtime handler passes pod annotations to the pod's pause
		// container as well: it runs no workload and gets nothing.
		return nil, nil
	}
	if service == "" {
		return nil, ErrEmptyService
	}
	return &Claim{Service: service, Spec: &spec, Raw: raw, Path: p}, nil
}

// Container builds the agent's view of the claiming container. rootfs is
// the container's root as seen where the attach happens.
func (c *Claim) Container(id string, pid int, rootfs string) *agent.Container {
	ctr := &agent.Container{
		Id:      id,
		Service: c.Service,
		Pid:     int32(pid),
		Rootfs:  rootfs,
		Os:      "linux",
	}
	if c.Spec.Root != nil {
		ctr.ReadonlyRootfs = c.Spec.Root.Readonly
	}
	if l := c.Spec.Linux; l != nil {
		ctr.UidMappings = idMappings(l.UIDMappings)
		ctr.GidMappings = idMappings(l.GIDMappings)
	}
	return ctr
}

func idMappings(in []specs.LinuxIDMapping) []*agent.IDMapping {
	if len(in) == 0 {
		return nil
	}
	out := make([]*agent.IDMapping, len(in))
	for i, m := range in {
		out[i] = &agent.IDMapping{ContainerId: m.ContainerID, HostId: m.HostID, Size: m.Size}
	}
	return out
}

// NeedsPlaceholder reports whether SecretsDir must be given its own empty
// tmpfs in the spec so that the attach has a mountpoint to move onto:
//
//   - a read-only rootfs with no mount at or above SecretsDir: after runc
//     create the root is read-only and no directory can be made in it;
//   - a user-namespaced container with no mount exactly at SecretsDir: the
//     tmpfs runc mounts at /run inside the user namespace belongs to that
//     namespace, and the agent (host root, unmapped there) cannot create a
//     directory in it (EOVERFLOW). The placeholder is the mountpoint itself.
func (c *Claim) NeedsPlaceholder() bool {
	readonly := c.Spec.Root != nil && c.Spec.Root.Readonly
	userns := c.Spec.Linux != nil && len(c.Spec.Linux.UIDMappings) > 0
	if !readonly && !userns {
		return false
	}
	for _, m := range c.Spec.Mounts {
		d := path.Clean(m.Destination)
		if d == SecretsDir {
			return false
		}
		if readonly && !userns && d != "/" && strings.HasPrefix(SecretsDir, d+"/") {
			return false
		}
	}
	return true
}

// placeholderMount is a small, empty tmpfs at SecretsDir. It holds no
// secret: the agent mounts the secrets tmpfs on top of it (or inside it for
// nested targets).
func placeholderMount() specs.Mount {
	return specs.Mount{
		Destination: SecretsDir,
		Type:        "tmpfs",
		Source:      "tmpfs",
		Options:     []string{"nosuid", "nodev", "noexec", "mode=0755", "size=64k"},
	}
}

// AddPlaceholder appends the placeholder mount to the spec. Call
// WriteSpec to persist it.
func (c *Claim) AddPlaceholder() {
	c.Spec.Mounts = append(c.Spec.Mounts, placeholderMount())
}

// AddHooks appends a createContainer and a poststop hook that run
// hookPath ("lockbox-runtime hook ...") with env.
func (c *Claim) AddHooks(hookPath string, env []string) {
	if c.Spec.Hooks == nil {
		c.Spec.Hooks = &specs.Hooks{}
	}
	c.Spec.Hooks.CreateContainer = append(c.Spec.Hooks.CreateContainer, specs.Hook{
		Path: hookPath, Args: []string{"lockbox-runtime", "hook", "createContainer"}, Env: env,
	})
	c.Spec.Hooks.Poststop = append(c.Spec.Hooks.Poststop, specs.Hook{
		Path: hookPath, Args: []string{"lockbox-runtime", "hook", "poststop"}, Env: env,
	})
}

// WriteSpec rewrites config.json with the spec's mounts and hooks. Every
// other key is kept byte for byte as containerd wrote it, so fields newer
// than this binary's runtime-spec are not lost. The file is replaced
// atomically.
func (c *Claim) WriteSpec() error {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(c.Raw, &doc); err != nil {
		return fmt.Errorf("decode bundle config %s: %w", c.Path, err)
	}
	mounts, err := json.Marshal(c.Spec.Mounts)
	if err != nil {
		return fmt.Errorf("encode mounts: %w", err)
	}
	doc["mounts"] = mounts
	if c.Spec.Hooks != nil {
		hooks, err := json.Marshal(c.Spec.Hooks)
		if err != nil {
			return fmt.Errorf("encode hooks: %w", err)
		}
		doc["hooks"] = hooks
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("encode bundle config: %w", err)
	}
	fi, err := os.Stat(c.Path)
	if err != nil {
		return fmt.Errorf("bundle config: %w", err)
	}
	tmp := c.Path + ".lockbox.tmp"
	if err := os.WriteFile(tmp, out, fi.Mode().Perm()); err != nil {
		return fmt.Errorf("write bundle config: %w", err)
	}
	if err := os.Rename(tmp, c.Path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace bundle config: %w", err)
	}
	c.Raw = out
	return nil
}
