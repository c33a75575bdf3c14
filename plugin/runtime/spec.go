package runtime

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/plugin/runtime/hotpath"
)

// ServiceAnnotation is the OCI annotation by which a container claims a
// service.
const ServiceAnnotation = hotpath.ServiceAnnotation

// SecretsDir is where secrets go when a reference names no absolute target.
const SecretsDir = hotpath.SecretsDir

// ErrEmptyService is returned for a bundle that carries the annotation with
// no value: the container meant to claim something, so it must not start
// without it.
var ErrEmptyService = hotpath.ErrEmptyService

// Claim is a bundle whose container claims a service.
type Claim struct {
	Service string
	Spec    *specs.Spec
	// Raw is config.json as read.
	Raw  []byte
	Path string
}

// ReadClaim reads bundle/config.json and returns its claim, or nil when the
// container claims no service (hotpath.ReadClaim decides), with the whole
// spec decoded.
func ReadClaim(bundle string) (*Claim, error) {
	hc, err := hotpath.ReadClaim(bundle)
	if err != nil || hc == nil {
		return nil, err
	}
	raw, p := hc.Raw()
	var spec specs.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, fmt.Errorf("decode bundle config %s: %w", filepath.Clean(p), err)
	}
	return &Claim{Service: hc.Service, Spec: &spec, Raw: raw, Path: p}, nil
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
