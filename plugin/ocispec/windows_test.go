package ocispec

import (
	"context"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lockbox-project/lockbox/mounter"
)

func TestWithSecretsMount(t *testing.T) {
	tests := []struct {
		name   string
		source string
		mounts []specs.Mount
		err    string
	}{
		{name: "drive path", source: `C:\ProgramData\lockbox\secrets\0a1b\files`},
		{name: "long path", source: `\\?\D:\lockbox\secrets\0a1b\files`},
		{name: "keeps other mounts", source: `C:\s`, mounts: []specs.Mount{{Destination: `C:\data`, Source: `D:\data`}}},
		{name: "relative source", source: `secrets\x`, err: "not an absolute Windows path"},
		{name: "linux source", source: `/var/lib/lockbox`, err: "not an absolute Windows path"},
		{name: "empty source", source: ``, err: "not an absolute Windows path"},
		{name: "taken destination", source: `C:\s`, mounts: []specs.Mount{{Destination: `c:\programdata\docker\internal\secrets\`, Source: `C:\x`}},
			err: "already mounts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &oci.Spec{Mounts: append([]specs.Mount(nil), tt.mounts...)}
			err := WithSecretsMount(tt.source)(context.Background(), nil, nil, s)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one with %q", err, tt.err)
				}
				if len(s.Mounts) != len(tt.mounts) {
					t.Fatalf("spec changed on error: %+v", s.Mounts)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Mounts) != len(tt.mounts)+1 {
				t.Fatalf("mounts = %+v", s.Mounts)
			}
			got := s.Mounts[len(s.Mounts)-1]
			want := specs.Mount{Destination: mounter.WindowsInternalSecretsDir, Source: tt.source, Options: []string{"ro"}}
			if got.Destination != want.Destination || got.Source != want.Source || got.Type != "" ||
				len(got.Options) != 1 || got.Options[0] != "ro" {
				t.Fatalf("mount = %+v, want %+v", got, want)
			}
		})
	}
}
