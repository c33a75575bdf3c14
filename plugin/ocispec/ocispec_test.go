package ocispec

import (
	"context"
	"reflect"
	"slices"
	"testing"

	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lockbox-project/lockbox/api/claim"
)

func TestWithService(t *testing.T) {
	s := &oci.Spec{}
	if err := WithService("web")(context.Background(), nil, nil, s); err != nil {
		t.Fatal(err)
	}
	if s.Annotations[claim.ServiceAnnotation] != "web" {
		t.Fatalf("annotations = %v", s.Annotations)
	}
	if err := WithService("")(context.Background(), nil, nil, s); err == nil {
		t.Fatal("empty service accepted")
	}
}

func TestWithHooks(t *testing.T) {
	s := &oci.Spec{}
	if err := WithHooks("/usr/local/bin/lockbox-runtime", "LOCKBOX_AGENT_SOCKET=/x")(context.Background(), nil, nil, s); err != nil {
		t.Fatal(err)
	}
	if len(s.Hooks.CreateContainer) != 1 || len(s.Hooks.Poststop) != 1 {
		t.Fatalf("hooks = %+v", s.Hooks)
	}
	h := s.Hooks.CreateContainer[0]
	if h.Path != "/usr/local/bin/lockbox-runtime" || !reflect.DeepEqual(h.Args, []string{"lockbox-runtime", "hook", "createContainer"}) || !reflect.DeepEqual(h.Env, []string{"LOCKBOX_AGENT_SOCKET=/x"}) {
		t.Fatalf("createContainer hook = %+v", h)
	}
	if err := WithHooks("")(context.Background(), nil, nil, s); err == nil {
		t.Fatal("empty path accepted")
	}
}

func TestWithMountpoints(t *testing.T) {
	s := &oci.Spec{}
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/proc", Type: "proc", Source: "proc"})
	if err := WithMountpoints("/run/secrets/a", "/etc/app/cert.pem")(context.Background(), nil, nil, s); err != nil {
		t.Fatal(err)
	}
	if len(s.Mounts) != 3 || s.Mounts[1].Destination != "/run/secrets/a" || s.Mounts[2].Destination != "/etc/app/cert.pem" {
		t.Fatalf("mounts = %+v", s.Mounts)
	}
	for _, m := range s.Mounts[1:] {
		if m.Type != "bind" || m.Source != claim.MountpointSource || !slices.Contains(m.Options, "ro") {
			t.Errorf("mount %+v, want a read-only bind of %s", m, claim.MountpointSource)
		}
	}
}

func TestWithMountpointsRefusesACollision(t *testing.T) {
	s := &oci.Spec{}
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/etc/app", Type: "bind", Source: "/srv/app", Options: []string{"rbind"}})
	if err := WithMountpoints("/etc/app/cert.pem")(context.Background(), nil, nil, s); err == nil {
		t.Fatal("a target in a volume was accepted")
	}
	if len(s.Mounts) != 1 {
		t.Fatalf("mounts = %+v", s.Mounts)
	}
}
