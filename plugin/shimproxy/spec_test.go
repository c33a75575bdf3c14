package shimproxy

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockbox-project/lockbox/mounter"
)

// The Windows secrets mount goes into config.json with every other field
// kept, as plugin/ocispec.WithSecretsMount shapes it.
func TestAddSecretsMount(t *testing.T) {
	ctx := context.Background()
	bundle := writeBundle(t, map[string]string{"lockbox.service": "web"})
	const src = `C:\ProgramData\lockbox\agent\secrets\0123456789abcdef0123456789abcdef\files`
	if err := addSecretsMount(ctx, bundle, src); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OCIVersion  string            `json:"ociVersion"`
		Annotations map[string]string `json:"annotations"`
		Mounts      []map[string]any  `json:"mounts"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OCIVersion != "1.2.0" || doc.Annotations["lockbox.service"] != "web" {
		t.Errorf("config lost its fields: %s", raw)
	}
	if len(doc.Mounts) != 2 || doc.Mounts[0]["x-future"] != float64(1) {
		t.Fatalf("mounts %v: want /proc, its unknown field kept, then the secrets mount", doc.Mounts)
	}
	m := doc.Mounts[1]
	if m["destination"] != mounter.WindowsInternalSecretsDir || m["source"] != src {
		t.Errorf("secrets mount %v", m)
	}
	if opts, _ := m["options"].([]any); len(opts) != 1 || opts[0] != "ro" {
		t.Errorf("secrets mount options %v, want [ro]", m["options"])
	}

	// A second one would hide the first: refused.
	if err := addSecretsMount(ctx, bundle, src); err == nil || !strings.Contains(err.Error(), "already mounts") {
		t.Errorf("second secrets mount: %v, want a refusal", err)
	}
	// A source that is no Windows host path is refused.
	if err := addSecretsMount(ctx, writeBundle(t, nil), "relative\\dir"); err == nil {
		t.Error("relative source accepted")
	}
}
