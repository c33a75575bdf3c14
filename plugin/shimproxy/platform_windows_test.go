package shimproxy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"

	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/mounter"
	"github.com/lockbox-project/lockbox/plugin/claimrecord"
	"github.com/lockbox-project/lockbox/plugin/runtime/hotpath"
)

// testPlatform is the Windows platform with its layers and the agent's
// state directory faked: wine has neither.
func testPlatform(t *testing.T) platform {
	state := tempDir(t)
	return windowsPlatform{
		stateDir:    state,
		mountRootfs: func([]*types.Mount, string) (func() error, error) { return func() error { return nil }, nil },
		findSource: func(stateDir, id string) (string, error) {
			return filepath.Join(stateDir, "secrets", "0123456789abcdef0123456789abcdef", "files"), nil
		},
	}
}

// On Windows the agent links the targets before the inner create: a claim
// it refuses never reaches runhcs.
const preparesBeforeCreate = true

// beforeCreate mounts the layers, records the claim, has the agent link
// into the mounted root, unmounts, and puts the directory the agent built
// in the spec; every failure unmounts and leaves the spec alone.
func TestWindowsBeforeCreate(t *testing.T) {
	layers := []*types.Mount{{Type: "windows-layer", Source: `C:\containerd\snapshots\7`, Options: []string{`parentLayerPaths=["C:\\containerd\\snapshots\\1"]`}}}
	for _, tc := range []struct {
		name      string
		service   string
		mountErr  error
		sourceErr error
		wantErr   string
	}{
		{name: "claim", service: "web"},
		{name: "not granted", service: "payments", wantErr: `service "payments" has no grant`},
		{name: "layers do not mount", service: "web", mountErr: errors.New("bindflt: access denied"), wantErr: "mount the container's layers: bindflt"},
		{name: "no directory found", service: "web", sourceErr: errors.New("the agent holds no secrets directory"), wantErr: "holds no secrets directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bundle := writeBundle(t, map[string]string{"lockbox.service": tc.service})
			target := filepath.Join(bundle, rootfsDirName)
			state := tempDir(t)
			var events []string
			p := windowsPlatform{
				stateDir: state,
				mountRootfs: func(m []*types.Mount, at string) (func() error, error) {
					if at != target || len(m) != 1 || m[0].Source != layers[0].Source {
						t.Errorf("mounted %v at %s, want the layers at %s", m, at, target)
					}
					if tc.mountErr != nil {
						return nil, tc.mountErr
					}
					events = append(events, "mount")
					return func() error { events = append(events, "unmount"); return nil }, nil
				},
				findSource: func(dir, id string) (string, error) {
					if dir != state || id != "c1" {
						t.Errorf("findSource(%s, %s)", dir, id)
					}
					events = append(events, "find")
					return filepath.Join(state, "secrets", "0123456789abcdef0123456789abcdef", "files"), tc.sourceErr
				},
			}
			ag := newFakeAgent()
			ag.onPrepare = func(req *agent.PrepareRequest) {
				events = append(events, "prepare")
				c := req.GetContainer()
				if !req.GetAttach() || c.GetOs() != "windows" || c.GetRootfs() != target || c.GetPid() != 0 || c.GetId() != "c1" {
					t.Errorf("prepare %v: want an attach of windows container c1 into %s", req, target)
				}
				if rec, _ := claimrecord.Read(bundle); rec == nil || rec.ID != "c1" {
					t.Errorf("no record when the agent prepares: %+v", rec)
				}
			}
			c, err := hotpath.ReadClaim(bundle)
			if err != nil || c == nil {
				t.Fatalf("claim %v, %v", c, err)
			}
			before, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
			err = p.beforeCreate(context.Background(), ag, c, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle, Rootfs: layers})
			after, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("beforeCreate: %v, want an error with %q", err, tc.wantErr)
				}
				if string(before) != string(after) {
					t.Errorf("failed claim changed the spec: %s", after)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(after), strings.ReplaceAll(mounter.WindowsInternalSecretsDir, `\`, `\\`)) {
					t.Errorf("spec without the secrets mount: %s", after)
				}
			}
			if tc.mountErr == nil {
				// Unmounted right after the prepare, whatever it answered.
				if len(events) < 3 || events[0] != "mount" || events[1] != "prepare" || events[2] != "unmount" {
					t.Errorf("events %v, want mount, prepare, unmount first", events)
				}
			}
			if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("rootfs mountpoint left in the bundle: %v", err)
			}
		})
	}
}

// Without rootfs mounts the spec's root is the root the agent links into.
func TestWindowsRootFromSpec(t *testing.T) {
	bundle := writeBundle(t, map[string]string{"lockbox.service": "web"})
	ag := newFakeAgent()
	c, err := hotpath.ReadClaim(bundle)
	if err != nil {
		t.Fatal(err)
	}
	p := testPlatform(t).(windowsPlatform)
	if err := p.beforeCreate(context.Background(), ag, c, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	if got := ag.prepares[0].GetContainer().GetRootfs(); got != filepath.Join(bundle, "rootfs") {
		t.Errorf("agent linked into %s, want the spec's root %s", got, filepath.Join(bundle, "rootfs"))
	}
}

func TestAgentStateDir(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if d := AgentStateDir(getenv); !filepath.IsAbs(d) || !strings.HasSuffix(d, `lockbox\agent`) {
		t.Errorf("default state dir %q", d)
	}
	env["LOCKBOX_STATE_DIR"] = `D:\lockbox`
	if d := AgentStateDir(getenv); d != `D:\lockbox` {
		t.Errorf("state dir %q, want D:\\lockbox", d)
	}
}
