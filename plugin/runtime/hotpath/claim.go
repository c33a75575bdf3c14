package hotpath

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lockbox-project/lockbox/api/claim"
	"github.com/lockbox-project/lockbox/internal/atomicfile"
	"github.com/lockbox-project/lockbox/plugin/runtime/agentconn"
)

// CRIContainerType is the annotation by which containerd's CRI marks a
// pod's sandbox (pause) container, and by which its presence marks every
// container CRI creates (facts.go).
const CRIContainerType = "io.kubernetes.cri.container-type"

// ErrEmptyService is returned for a bundle that carries the annotation with
// no value: the container meant to claim something, so it must not start
// without it.
var ErrEmptyService = errors.New("annotation " + claim.ServiceAnnotation + " is empty")

// annotationKey is what the fast path looks for before decoding anything.
var annotationKey = []byte(`"` + claim.ServiceAnnotation + `"`)

// bundleConfig is the part of config.json the wrapper reads. Decoding only
// these keys costs a fraction of decoding the whole runtime-spec Spec.
type bundleConfig struct {
	Root *struct {
		Path     string `json:"path"`
		Readonly bool   `json:"readonly"`
	} `json:"root"`
	Linux *struct {
		UIDMappings []idMapping `json:"uidMappings"`
		GIDMappings []idMapping `json:"gidMappings"`
	} `json:"linux"`
	Annotations map[string]string `json:"annotations"`
}

type idMapping struct {
	ContainerID uint32 `json:"containerID"`
	HostID      uint32 `json:"hostID"`
	Size        uint32 `json:"size"`
}

// Claim is a bundle whose container claims a service.
type Claim struct {
	Service string
	// RootPath is the spec's root.path as written (relative to the bundle
	// unless absolute).
	RootPath       string
	ReadonlyRootfs bool
	UIDMappings    []agentconn.IDMapping
	GIDMappings    []agentconn.IDMapping
	// Facts are what the spec tells of the container that the container
	// cannot forge (SpecFacts): its pod and image under CRI. The adapter
	// adds the containerd namespace, which only it can know.
	Facts agentconn.Facts

	// raw is config.json as read: a spec change rewrites only the keys it
	// touches and keeps every other byte.
	raw  []byte
	path string
	// Changes not yet written by WriteSpec.
	addMounts []json.RawMessage
	addHooks  map[string][]json.RawMessage
}

// ReadClaim reads bundle/config.json and returns its claim, or nil when the
// container claims no service. The common case, a container that claims
// nothing, costs one read and one byte search: no JSON decoding. A
// missing or unreadable file is an *os.PathError.
func ReadClaim(bundle string) (*Claim, error) {
	p := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read bundle config: %w", err)
	}
	return parseClaim(raw, p)
}

func parseClaim(raw []byte, p string) (*Claim, error) {
	if !bytes.Contains(raw, annotationKey) {
		return nil, nil
	}
	var cfg bundleConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("decode bundle config %s: %w", p, err)
	}
	service, ok := cfg.Annotations[claim.ServiceAnnotation]
	if !ok {
		// The key appeared elsewhere (an env value, a label): no claim.
		return nil, nil
	}
	if cfg.Annotations[CRIContainerType] == "sandbox" {
		// A CRI runtime handler passes pod annotations to the pod's pause
		// container as well: it runs no workload and gets nothing.
		return nil, nil
	}
	if service == "" {
		return nil, ErrEmptyService
	}
	c := &Claim{Service: service, raw: raw, path: p, Facts: SpecFacts(cfg.Annotations)}
	if cfg.Root != nil {
		c.RootPath, c.ReadonlyRootfs = cfg.Root.Path, cfg.Root.Readonly
	}
	if l := cfg.Linux; l != nil {
		c.UIDMappings = idMappings(l.UIDMappings)
		c.GIDMappings = idMappings(l.GIDMappings)
	}
	return c, nil
}

func idMappings(in []idMapping) []agentconn.IDMapping {
	if len(in) == 0 {
		return nil
	}
	out := make([]agentconn.IDMapping, len(in))
	for i, m := range in {
		out[i] = agentconn.IDMapping{ContainerID: m.ContainerID, HostID: m.HostID, Size: m.Size}
	}
	return out
}

// Container builds the agent's view of the claiming container. rootfs is
// the container's root as seen where the attach happens.
func (c *Claim) Container(id string, pid int, rootfs string) *agentconn.Container {
	return &agentconn.Container{
		ID:             id,
		Service:        c.Service,
		Pid:            pid,
		Rootfs:         rootfs,
		ReadonlyRootfs: c.ReadonlyRootfs,
		UIDMappings:    c.UIDMappings,
		GIDMappings:    c.GIDMappings,
		OS:             "linux",
		Facts:          c.Facts.Copy(),
	}
}

// NeedsMountpoints reports whether the runtime must make the secrets'
// mountpoints (claim.NeedsMountpoints): the container's root is read-only
// or it runs in a user namespace, so the agent cannot make them after the
// create. The adapter then asks the agent for the claim's targets and adds
// them with AddMountpoints before the create.
func (c *Claim) NeedsMountpoints() bool {
	return claim.NeedsMountpoints(c.ReadonlyRootfs, len(c.UIDMappings) > 0)
}

// specMount and specHook are the runtime-spec's Mount and Hook as the
// wrapper writes them.
type specMount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type"`
	Source      string   `json:"source"`
	Options     []string `json:"options"`
}

type specHook struct {
	Path string   `json:"path"`
	Args []string `json:"args"`
	Env  []string `json:"env,omitempty"`
}

// AddMountpoints adds a read-only bind of the agent's empty mountpoint
// file at every target (claim.MountpointMounts), so that the runtime makes
// each target's file and directories before the root turns read-only; the
// agent attaches the secrets on top after the create. A target that would
// hide a mount of the spec (claim.Collision) is refused, before runc could
// cover it. Call WriteSpec to persist them.
func (c *Claim) AddMountpoints(targets []string) error {
	mounts, err := c.specMounts()
	if err != nil {
		return err
	}
	if t, m, ok := claim.Collision(targets, mounts); ok {
		return fmt.Errorf("secret target %s collides with the mount at %s the container already has; choose another target", t, m)
	}
	for _, m := range claim.MountpointMounts(targets) {
		b, _ := json.Marshal(specMount{Destination: m.Destination, Type: m.Type, Source: m.Source, Options: m.Options})
		c.addMounts = append(c.addMounts, b)
	}
	return nil
}

// specMounts decodes the spec's mounts. Only a container that needs
// mountpoints pays for it: ReadClaim leaves them out, the hot path of every
// other claim.
func (c *Claim) specMounts() ([]claim.Mount, error) {
	var cfg struct {
		Mounts []struct {
			Destination string   `json:"destination"`
			Type        string   `json:"type"`
			Source      string   `json:"source"`
			Options     []string `json:"options"`
		} `json:"mounts"`
	}
	if err := json.Unmarshal(c.raw, &cfg); err != nil {
		return nil, fmt.Errorf("decode bundle config %s: mounts: %w", c.path, err)
	}
	ms := make([]claim.Mount, len(cfg.Mounts))
	for i, m := range cfg.Mounts {
		ms[i] = claim.Mount{Destination: m.Destination, Type: m.Type, Source: m.Source, Options: m.Options}
	}
	return ms, nil
}

// AddHooks adds a createContainer and a poststop hook that run hookPath
// ("lockbox-runtime hook ...") with env. Call WriteSpec to persist them.
func (c *Claim) AddHooks(hookPath string, env []string) {
	if c.addHooks == nil {
		c.addHooks = map[string][]json.RawMessage{}
	}
	for _, stage := range []string{"createContainer", "poststop"} {
		b, _ := json.Marshal(specHook{Path: hookPath, Args: []string{"lockbox-runtime", "hook", stage}, Env: env})
		c.addHooks[stage] = append(c.addHooks[stage], b)
	}
}

// WriteSpec rewrites config.json with the mounts and hooks added. Every
// other key, and every field of the existing mounts and hooks, is kept as
// containerd wrote it, so fields newer than this code are not lost. The
// file is replaced atomically.
func (c *Claim) WriteSpec() error {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(c.raw, &doc); err != nil {
		return fmt.Errorf("decode bundle config %s: %w", c.path, err)
	}
	if len(c.addMounts) > 0 {
		var mounts []json.RawMessage
		if err := unmarshalOptional(doc["mounts"], &mounts); err != nil {
			return fmt.Errorf("decode bundle config %s: mounts: %w", c.path, err)
		}
		b, err := json.Marshal(append(mounts, c.addMounts...))
		if err != nil {
			return fmt.Errorf("encode mounts: %w", err)
		}
		doc["mounts"] = b
	}
	if len(c.addHooks) > 0 {
		var hooks map[string]json.RawMessage
		if err := unmarshalOptional(doc["hooks"], &hooks); err != nil {
			return fmt.Errorf("decode bundle config %s: hooks: %w", c.path, err)
		}
		if hooks == nil {
			hooks = map[string]json.RawMessage{}
		}
		for stage, add := range c.addHooks {
			var list []json.RawMessage
			if err := unmarshalOptional(hooks[stage], &list); err != nil {
				return fmt.Errorf("decode bundle config %s: hooks.%s: %w", c.path, stage, err)
			}
			b, err := json.Marshal(append(list, add...))
			if err != nil {
				return fmt.Errorf("encode hooks: %w", err)
			}
			hooks[stage] = b
		}
		b, err := json.Marshal(hooks)
		if err != nil {
			return fmt.Errorf("encode hooks: %w", err)
		}
		doc["hooks"] = b
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("encode bundle config: %w", err)
	}
	fi, err := os.Stat(c.path)
	if err != nil {
		return fmt.Errorf("bundle config: %w", err)
	}
	if err := atomicfile.ReplaceFile(c.path, out, fi.Mode().Perm()); err != nil {
		return fmt.Errorf("replace bundle config: %w", err)
	}
	c.raw, c.addMounts, c.addHooks = out, nil, nil
	return nil
}

// unmarshalOptional decodes b into v unless the key was absent or null.
func unmarshalOptional(b json.RawMessage, v any) error {
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	return json.Unmarshal(b, v)
}

// Raw returns config.json as last read or written, and its path.
func (c *Claim) Raw() ([]byte, string) { return c.raw, c.path }
