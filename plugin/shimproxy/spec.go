package shimproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lockbox-project/lockbox/internal/atomicfile"
	"github.com/lockbox-project/lockbox/plugin/ocispec"
)

// addSecretsMount adds the Windows secrets mount (source, read-only at the
// internal secrets directory: plugin/ocispec.WithSecretsMount, the one
// home of its shape and checks) to the bundle's config.json before the
// inner create. Every other key, and every field of the mounts already
// there, is kept as containerd wrote it; the file is replaced atomically.
func addSecretsMount(ctx context.Context, bundle, source string) error {
	p := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("read bundle config: %w", err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("decode bundle config %s: %w", p, err)
	}
	var mounts []json.RawMessage
	var typed []specs.Mount
	if m := doc["mounts"]; len(m) > 0 && string(m) != "null" {
		if err := json.Unmarshal(m, &mounts); err != nil {
			return fmt.Errorf("decode bundle config %s: mounts: %w", p, err)
		}
		if err := json.Unmarshal(m, &typed); err != nil {
			return fmt.Errorf("decode bundle config %s: mounts: %w", p, err)
		}
	}
	s := &oci.Spec{Mounts: typed}
	if err := ocispec.WithSecretsMount(source)(ctx, nil, nil, s); err != nil {
		return err
	}
	add, err := json.Marshal(s.Mounts[len(s.Mounts)-1])
	if err != nil {
		return fmt.Errorf("encode mount: %w", err)
	}
	if doc["mounts"], err = json.Marshal(append(mounts, add)); err != nil {
		return fmt.Errorf("encode mounts: %w", err)
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("encode bundle config: %w", err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("bundle config: %w", err)
	}
	if err := atomicfile.ReplaceFile(p, out, fi.Mode().Perm()); err != nil {
		return fmt.Errorf("replace bundle config: %w", err)
	}
	return nil
}
