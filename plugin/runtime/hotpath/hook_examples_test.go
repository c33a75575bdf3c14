package hotpath

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The hook examples shipped in docs/containerd must call this package's
// entry points with the events it understands.
func TestDocExamples(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "docs", "containerd")
	for file, event := range map[string]string{
		"hooks.d-lockbox-createContainer.json": CreateContainer,
		"hooks.d-lockbox-poststop.json":        Poststop,
	} {
		var h struct {
			Version string
			Hook    specs.Hook
			When    struct{ Annotations map[string]string }
			Stages  []string
		}
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &h); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if !reflect.DeepEqual(h.Hook.Args, []string{"lockbox-runtime", "hook", event}) || !reflect.DeepEqual(h.Stages, []string{event}) {
			t.Errorf("%s: args %q stages %q", file, h.Hook.Args, h.Stages)
		}
		for k := range h.When.Annotations {
			if !regexp.MustCompile(k).MatchString("lockbox.service") {
				t.Errorf("%s: annotation pattern %q does not match lockbox.service", file, k)
			}
		}
	}
	var spec specs.Spec
	b, err := os.ReadFile(filepath.Join(dir, "base-runtime-spec-hooks.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	if len(spec.Hooks.CreateContainer) != 1 || spec.Hooks.CreateContainer[0].Args[2] != CreateContainer ||
		len(spec.Hooks.Poststop) != 1 || spec.Hooks.Poststop[0].Args[2] != Poststop {
		t.Errorf("base spec hooks = %+v", spec.Hooks)
	}
}
