package hotpath

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lockbox-project/lockbox/plugin/runtime/agentconn"
)

// prepareCall is one Prepare a fake agent received.
type prepareCall struct {
	ctr    agentconn.Container
	attach bool
}

// hookAgent hands over two mounts as fds.
type hookAgent struct {
	prepared []prepareCall
	released []string
	files    []*os.File
	err      error
}

func (a *hookAgent) Prepare(c *agentconn.Container, attach bool) ([]agentconn.Mount, []*os.File, error) {
	a.prepared = append(a.prepared, prepareCall{*c, attach})
	if a.err != nil {
		return nil, nil, a.err
	}
	return []agentconn.Mount{{Target: "/run/secrets", FdIndex: 0}, {Target: "/etc/app/key", FdIndex: 1}}, a.files, nil
}

func (a *hookAgent) Release(id string, _ agentconn.Process) error {
	a.released = append(a.released, id)
	return nil
}

// Targets is never asked by the hook: it makes the mountpoints itself.
func (a *hookAgent) Targets(*agentconn.Container) ([]string, error) {
	return nil, errors.New("the hook asked for targets")
}

func (a *hookAgent) Close() error { return nil }

type hookRig struct {
	bundle    string
	agent     *hookAgent
	attached  []Handover
	attachErr error
	h         *Hook
}

func newHookRig(t *testing.T, annotations map[string]string) *hookRig {
	t.Helper()
	r := &hookRig{bundle: t.TempDir(), agent: &hookAgent{}}
	b, _ := json.Marshal(specs.Spec{Version: specs.Version, Root: &specs.Root{Path: "rootfs"}, Annotations: annotations})
	if err := os.WriteFile(filepath.Join(r.bundle, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		f, err := os.Open(r.bundle)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		r.agent.files = append(r.agent.files, f)
	}
	r.h = &Hook{
		Socket: "/nonexistent/agent.sock",
		Dial:   func(string, time.Duration) (Agent, error) { return r.agent, nil },
		Attach: func(rootfs string, hs []Handover) error {
			if rootfs != filepath.Join(r.bundle, "rootfs") {
				t.Errorf("attach under %s", rootfs)
			}
			r.attached = append(r.attached, hs...)
			return r.attachErr
		},
	}
	return r
}

func (r *hookRig) state(t *testing.T, annotations map[string]string) *strings.Reader {
	t.Helper()
	b, err := json.Marshal(specs.State{Version: specs.Version, ID: "c1", Bundle: r.bundle, Pid: 77, Annotations: annotations})
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReader(string(b))
}

var web = map[string]string{ServiceAnnotation: "web"}

func TestHookCreateContainerAttachesReceivedFDs(t *testing.T) {
	r := newHookRig(t, web)
	if err := r.h.Run(CreateContainer, r.state(t, web)); err != nil {
		t.Fatal(err)
	}
	want := agentconn.Container{ID: "c1", Service: "web", Pid: 77, Rootfs: filepath.Join(r.bundle, "rootfs"), OS: "linux"}
	if len(r.agent.prepared) != 1 || r.agent.prepared[0].attach || r.agent.prepared[0].ctr.ID != want.ID ||
		r.agent.prepared[0].ctr.Rootfs != want.Rootfs || r.agent.prepared[0].ctr.Pid != want.Pid {
		t.Fatalf("prepared %+v, want a handover for %+v", r.agent.prepared, want)
	}
	if len(r.attached) != 2 || r.attached[0].Target != "/run/secrets" || r.attached[1].File != r.agent.files[1] {
		t.Fatalf("attached %+v", r.attached)
	}
	// The hook closes what it received once attached.
	if _, err := r.agent.files[0].Stat(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("fd left open after attach: %v", err)
	}
}

func TestHookNotGranted(t *testing.T) {
	r := newHookRig(t, web)
	r.agent.err = &agentconn.Error{Code: agentconn.NotGranted, Message: "no grant"}
	err := r.h.Run(CreateContainer, r.state(t, web))
	if err == nil || !strings.Contains(err.Error(), `service "web"`) || !strings.Contains(err.Error(), "NOT_GRANTED") {
		t.Fatalf("err = %v, want one naming the service and the agent's reason", err)
	}
	if len(r.attached) != 0 {
		t.Fatal("attached after a failed prepare")
	}
}

// A failed attach gives the mount back at once: the container will not
// start, and its delete may never come.
func TestHookAttachFailureReleases(t *testing.T) {
	r := newHookRig(t, web)
	r.attachErr = errors.New("attach /run/secrets: move mount: EINVAL")
	if err := r.h.Run(CreateContainer, r.state(t, web)); err == nil || !strings.Contains(err.Error(), "move mount") {
		t.Fatalf("err = %v", err)
	}
	if len(r.agent.released) != 1 || r.agent.released[0] != "c1" {
		t.Fatalf("released %q", r.agent.released)
	}
}

func TestHookLeavesOthersAlone(t *testing.T) {
	sandbox := map[string]string{ServiceAnnotation: "web", CRIContainerType: "sandbox"}
	for name, ann := range map[string]map[string]string{"claims nothing": nil, "pod sandbox": sandbox} {
		r := newHookRig(t, ann)
		for _, ev := range []string{CreateContainer, Poststop} {
			if err := r.h.Run(ev, r.state(t, ann)); err != nil {
				t.Fatalf("%s %s: %v", name, ev, err)
			}
		}
		if r.agent.prepared != nil || r.agent.released != nil {
			t.Fatalf("%s: agent called", name)
		}
	}
}

func TestHookStateClaimsButBundleDoesNot(t *testing.T) {
	r := newHookRig(t, nil)
	if err := r.h.Run(CreateContainer, r.state(t, web)); err == nil || !strings.Contains(err.Error(), "config.json does not") {
		t.Fatalf("err = %v", err)
	}
}

func TestHookPoststopReleases(t *testing.T) {
	r := newHookRig(t, web)
	if err := r.h.Run(Poststop, r.state(t, web)); err != nil {
		t.Fatal(err)
	}
	if len(r.agent.released) != 1 || r.agent.released[0] != "c1" {
		t.Fatalf("released %q", r.agent.released)
	}
}

func TestHookBadInput(t *testing.T) {
	r := newHookRig(t, nil)
	for _, tc := range []struct{ event, stdin string }{
		{CreateContainer, "not json"},
		{CreateContainer, `{"id":""}`},
		{"prestart", `{"id":"x"}`},
	} {
		if err := r.h.Run(tc.event, strings.NewReader(tc.stdin)); err == nil {
			t.Errorf("%s %q: no error", tc.event, tc.stdin)
		}
	}
}

func TestRootfs(t *testing.T) {
	for _, tc := range []struct {
		name, bundle, root, want string
		err                      bool
	}{
		{"relative to the bundle", "/run/b/c1", "rootfs", "/run/b/c1/rootfs", false},
		{"absolute", "/run/b/c1", "/var/lib/c1/merged/", "/var/lib/c1/merged", false},
		{"dot-dot cleaned", "/run/b/c1", "../c1/rootfs", "/run/b/c1/rootfs", false},
		{"no root path", "/run/b/c1", "", "", true},
		{"relative bundle", "b/c1", "rootfs", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Rootfs(tc.bundle, tc.root)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("Rootfs = %q, %v; want %q, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}
