//go:build linux

package harness

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// crunScript runs crun where this machine's cgroup layout does not stop
// it. The CI machine mounts cgroup v1 controllers under /sys/fs/cgroup and
// cgroup2 at /sys/fs/cgroup/unified with a controller bound to it
// (hugetlb, which no v1 hierarchy takes), and crun 1.8.1 refuses every
// container there: "cgroups in hybrid mode not supported, drop all
// controllers from cgroupv2" (with --cgroup-manager=disabled too). In a
// private mount namespace without the cgroup2 mount it sees plain cgroup v1
// and places the container in the v1 hierarchies as usual. The namespace
// lives as long as the crun call: the container gets its own anyway.
const crunScript = `#!/bin/sh
exec unshare --mount --propagation private -- /bin/sh -c '
if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified || exit 1; fi
exec "$0" "$@"' /usr/bin/crun "$@"
`

// Crun returns a runc-compatible executable that runs crun on this machine
// (see crunScript), for a shim's BinaryName or LOCKBOX_RUNC.
func Crun(t testing.TB) string {
	t.Helper()
	need(t, "/usr/bin/crun", "apt-get install crun")
	p := filepath.Join(t.TempDir(), "crun")
	if err := os.WriteFile(p, []byte(crunScript), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// CrunSpecVersion is the newest OCI spec version crun 1.8.1 accepts: it
// answers "unknown version specified" to anything past 1.1.x, and
// containerd 2.4.2 writes "1.3.0". Nothing of 1.2/1.3 is used by the
// specs the tests build.
const CrunSpecVersion = "1.1.0"

// WithCrunSpecVersion writes CrunSpecVersion as the spec's ociVersion.
func WithCrunSpecVersion(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	s.Version = CrunSpecVersion
	return nil
}
