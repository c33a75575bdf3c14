package hook

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/mounter"
)

type fakeAgent struct {
	req      *agent.PrepareRequest
	released []string
	files    []*os.File
	err      error
}

func (a *fakeAgent) Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
	a.req = req
	if a.err != nil {
		return nil, nil, a.err
	}
	return &agent.PrepareResponse{Mounts: []*agent.MountPoint{
		{Target: "/run/secrets", FdIndex: 0},
		{Target: "/etc/app/key", FdIndex: 1},
	}}, a.files, nil
}

func (a *fakeAgent) Release(ctx context.Context, id string) error {
	a.released = append(a.released, id)
	return nil
}

func (a *fakeAgent) Close() error { return nil }

func setup(t *testing.T, annotations map[string]string) (string, *fakeAgent, *[]mounter.Handover, *Hook) {
	t.Helper()
	bundle := t.TempDir()
	spec := specs.Spec{Version: specs.Version, Root: &specs.Root{Path: "rootfs"}, Annotations: annotations}
	b, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	fa := &fakeAgent{}
	for i := 0; i < 2; i++ {
		f, err := os.Open(bundle)
		if err != nil {
			t.Fatal(err)
		}
		fa.files = append(fa.files, f)
	}
	var got []mounter.Handover
	h := &Hook{
		Socket: "/nonexistent/agent.sock",
		Dial:   func(string) (Agent, error) { return fa, nil },
		Attach: func(rootfs string, hs []mounter.Handover) error {
			if rootfs != filepath.Join(bundle, "rootfs") {
				t.Errorf("attach under %s", rootfs)
			}
			got = append(got, hs...)
			return nil
		},
	}
	return bundle, fa, &got, h
}

func state(t *testing.T, bundle string, annotations map[string]string) *strings.Reader {
	b, err := json.Marshal(specs.State{Version: specs.Version, ID: "c1", Bundle: bundle, Pid: 77, Annotations: annotations})
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReader(string(b))
}

func TestCreateContainerAttachesReceivedFDs(t *testing.T) {
	ann := map[string]string{"lockbox.service": "web"}
	bundle, fa, got, h := setup(t, ann)
	if err := h.Run(CreateContainer, state(t, bundle, ann)); err != nil {
		t.Fatal(err)
	}
	if fa.req.GetAttach() || fa.req.GetContainer().GetService() != "web" || fa.req.GetContainer().GetRootfs() != filepath.Join(bundle, "rootfs") || fa.req.GetContainer().GetPid() != 77 {
		t.Fatalf("prepare request = %v", fa.req)
	}
	if len(*got) != 2 || (*got)[0].Target != "/run/secrets" || (*got)[1].File != fa.files[1] {
		t.Fatalf("attached %+v", *got)
	}
	// The hook closes what it received once attached.
	if _, err := fa.files[0].Stat(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("fd left open after attach: %v", err)
	}
}

func TestCreateContainerNotGranted(t *testing.T) {
	ann := map[string]string{"lockbox.service": "web"}
	bundle, fa, got, h := setup(t, ann)
	fa.err = errors.New("agent: NOT_GRANTED: no grant")
	err := h.Run(CreateContainer, state(t, bundle, ann))
	if err == nil || !strings.Contains(err.Error(), `service "web"`) {
		t.Fatalf("err = %v, want one naming the service", err)
	}
	if len(*got) != 0 {
		t.Fatal("attached after a failed prepare")
	}
}

func TestNonClaimingIsIgnored(t *testing.T) {
	bundle, fa, _, h := setup(t, nil)
	for _, ev := range []string{CreateContainer, Poststop} {
		if err := h.Run(ev, state(t, bundle, nil)); err != nil {
			t.Fatal(err)
		}
	}
	if fa.req != nil || fa.released != nil {
		t.Fatal("agent called for a container that claims nothing")
	}
}

func TestPoststopReleases(t *testing.T) {
	ann := map[string]string{"lockbox.service": "web"}
	bundle, fa, _, h := setup(t, ann)
	if err := h.Run(Poststop, state(t, bundle, ann)); err != nil {
		t.Fatal(err)
	}
	if len(fa.released) != 1 || fa.released[0] != "c1" {
		t.Fatalf("released %q", fa.released)
	}
}

func TestBadInput(t *testing.T) {
	_, _, _, h := setup(t, nil)
	for _, tc := range []struct{ event, stdin string }{
		{CreateContainer, "not json"},
		{CreateContainer, `{"id":""}`},
		{"prestart", `{"id":"x"}`},
	} {
		if err := h.Run(tc.event, strings.NewReader(tc.stdin)); err == nil {
			t.Errorf("%s %q: no error", tc.event, tc.stdin)
		}
	}
}

func TestRootfs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		bundle string
		root   *specs.Root
		want   string
		err    bool
	}{
		{"relative to the bundle", "/run/b/c1", &specs.Root{Path: "rootfs"}, "/run/b/c1/rootfs", false},
		{"absolute", "/run/b/c1", &specs.Root{Path: "/var/lib/c1/merged/"}, "/var/lib/c1/merged", false},
		{"dot-dot cleaned", "/run/b/c1", &specs.Root{Path: "../c1/rootfs"}, "/run/b/c1/rootfs", false},
		{"no root", "/run/b/c1", nil, "", true},
		{"empty path", "/run/b/c1", &specs.Root{}, "", true},
		{"relative bundle", "b/c1", &specs.Root{Path: "rootfs"}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Rootfs(tc.bundle, &specs.Spec{Root: tc.root})
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("Rootfs = %q, %v; want %q, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}
