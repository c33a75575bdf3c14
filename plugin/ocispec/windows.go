package ocispec

import (
	"context"
	"fmt"
	"strings"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lockbox-project/lockbox/mounter"
)

// WithSecretsMount adds the one mount a Windows container needs for its
// secrets: source, the host directory of a built plan (the windows
// package's Mount.Source),
// read-only at mounter.WindowsInternalSecretsDir. Windows cannot bind-mount
// single files, so the targets are links into this directory, made by
// Attach. It is for containerd Go-client users; it refuses a spec that
// already mounts something there, since a second mount would hide the first.
func WithSecretsMount(source string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if !isAbsWindowsHostPath(source) {
			return fmt.Errorf("lockbox secrets mount: source %q is not an absolute Windows path", source)
		}
		for _, m := range s.Mounts {
			if strings.EqualFold(strings.TrimRight(m.Destination, `\/`), mounter.WindowsInternalSecretsDir) {
				return fmt.Errorf("lockbox secrets mount: the spec already mounts %q at %s", m.Source, m.Destination)
			}
		}
		s.Mounts = append(s.Mounts, specs.Mount{
			Destination: mounter.WindowsInternalSecretsDir,
			Source:      source,
			// hcsshim reads "ro" to map the directory read-only; like
			// containerd's CRI for Windows, no type is set.
			Options: []string{"ro"},
		})
		return nil
	}
}

// isAbsWindowsHostPath reports whether p is a drive path (C:\...) or a
// \\?\ path, the forms a state directory on the host can take.
func isAbsWindowsHostPath(p string) bool {
	if strings.HasPrefix(p, `\\?\`) {
		return len(p) > len(`\\?\`)
	}
	return len(p) >= 3 && p[1] == ':' && (p[2] == '\\' || p[2] == '/') &&
		('a' <= p[0] && p[0] <= 'z' || 'A' <= p[0] && p[0] <= 'Z')
}
