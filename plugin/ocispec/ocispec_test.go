package ocispec

import (
	"context"
	"reflect"
	"testing"

	"github.com/containerd/containerd/v2/pkg/oci"

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
