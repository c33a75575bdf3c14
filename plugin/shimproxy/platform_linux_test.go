package shimproxy

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"

	"github.com/lockbox-project/lockbox/api/claim"
)

func testPlatform(*testing.T) platform { return linuxPlatform{} }

// On Linux the agent attaches after the inner create, by the init's pid:
// a claim it refuses takes the created container back.
const preparesBeforeCreate = false

// A read-only root gets a read-only bind of the agent's empty file at each
// target in the spec before the inner create (runc makes the mountpoints
// before the root turns read-only); a claim the agent refuses fails before
// the inner shim sees anything.
func TestLinuxReadonlyMountpoints(t *testing.T) {
	for _, tc := range []struct {
		service    string
		wantErr    string
		wantCalls  []string
		wantMounts []string
	}{
		{service: "web", wantCalls: []string{"create c1"}, wantMounts: []string{"/proc", "/run/secrets/db_pw"}},
		{service: "payments", wantErr: `claims service "payments"`, wantCalls: []string{}},
	} {
		t.Run(tc.service, func(t *testing.T) {
			inner := newFakeInner()
			ag := newFakeAgent()
			s := startProxyService(t, inner, ag, nil)
			bundle := tempDir(t)
			cfg := `{"root":{"path":"rootfs","readonly":true},"mounts":[{"destination":"/proc","type":"proc","source":"proc"}],` +
				`"annotations":{"lockbox.service":"` + tc.service + `"}}`
			if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Create: %v, want an error with %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := inner.Calls(); !slices.Equal(got, tc.wantCalls) {
				t.Errorf("inner shim calls %v, want %v", got, tc.wantCalls)
			}
			if len(ag.targets) != 1 {
				t.Errorf("%d targets requests, want 1", len(ag.targets))
			}
			var spec struct {
				Mounts []struct {
					Destination string   `json:"destination"`
					Type        string   `json:"type"`
					Source      string   `json:"source"`
					Options     []string `json:"options"`
				} `json:"mounts"`
			}
			b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &spec); err != nil {
				t.Fatal(err)
			}
			var dests []string
			for _, m := range spec.Mounts {
				dests = append(dests, m.Destination)
				if m.Destination != "/proc" && (m.Type != "bind" || m.Source != claim.MountpointSource || !slices.Contains(m.Options, "ro")) {
					t.Errorf("mount %+v, want a read-only bind of %s", m, claim.MountpointSource)
				}
			}
			want := tc.wantMounts
			if want == nil {
				want = []string{"/proc"}
			}
			if !slices.Equal(dests, want) {
				t.Errorf("spec mounts %v, want %v", dests, want)
			}
		})
	}
}
