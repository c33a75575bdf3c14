package runtime

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/agent"
)

func writeBundle(t *testing.T, spec *specs.Spec) string {
	t.Helper()
	dir := t.TempDir()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestReadClaimDecodesTheWholeSpec(t *testing.T) {
	spec := &specs.Spec{
		Version:     specs.Version,
		Root:        &specs.Root{Path: "rootfs", Readonly: true},
		Process:     &specs.Process{Args: []string{"sh"}},
		Annotations: map[string]string{ServiceAnnotation: "web"},
		Linux:       &specs.Linux{UIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 10}}},
	}
	c, err := ReadClaim(writeBundle(t, spec))
	if err != nil || c == nil {
		t.Fatalf("claim %v, %v", c, err)
	}
	if c.Service != "web" || c.Spec.Process == nil || c.Spec.Process.Args[0] != "sh" {
		t.Fatalf("claim %+v", c)
	}
	want := &agent.Container{Id: "c1", Service: "web", Pid: 9, Rootfs: "/r", Os: "linux", ReadonlyRootfs: true,
		UidMappings: []*agent.IDMapping{{ContainerId: 0, HostId: 1000, Size: 10}}}
	if got := c.Container("c1", 9, "/r"); !proto.Equal(got, want) {
		t.Fatalf("container %v, want %v", got, want)
	}
}

func TestReadClaimFollowsTheWrapper(t *testing.T) {
	for name, ann := range map[string]map[string]string{
		"claims nothing": {"other": "lockbox.service"},
		"pod sandbox":    {ServiceAnnotation: "web", "io.kubernetes.cri.container-type": "sandbox"},
	} {
		c, err := ReadClaim(writeBundle(t, &specs.Spec{Version: specs.Version, Annotations: ann}))
		if err != nil || c != nil {
			t.Errorf("%s: claim %v, %v", name, c, err)
		}
	}
	if _, err := ReadClaim(writeBundle(t, &specs.Spec{Annotations: map[string]string{ServiceAnnotation: ""}})); err != ErrEmptyService {
		t.Errorf("empty service: %v", err)
	}
}
