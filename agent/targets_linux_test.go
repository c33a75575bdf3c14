package agent

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lockbox-project/lockbox/agent/errdefs"
	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/mounter"
)

// Targets answers a claim's targets before the container exists, builds
// and holds nothing, and refuses what Prepare would refuse.
func TestTargets(t *testing.T) {
	state := t.TempDir()
	a := newAgent(t, state, newCache(t))
	ctx := context.Background()
	resp, err := a.Targets(ctx, &api.TargetsRequest{Container: &api.Container{Id: "c1", Service: "web", ReadonlyRootfs: true}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/run/secrets/db_pw", "/run/secrets/cfg/key"}; !slices.Equal(resp.GetTargets(), want) {
		t.Fatalf("targets %q, want %q", resp.GetTargets(), want)
	}
	if held, _ := a.List(ctx); len(held.GetContainers()) != 0 {
		t.Fatalf("Targets left the agent holding %v", held.GetContainers())
	}
	if recs, _ := a.records.list(); len(recs) != 0 {
		t.Fatalf("Targets left records %v", recs)
	}

	for _, tt := range []struct {
		name string
		c    *api.Container
		kind errdefs.Kind
	}{
		{"not granted", &api.Container{Id: "c1", Service: "payments"}, errdefs.NotGranted},
		{"bad id", &api.Container{Id: "../x", Service: "web"}, errdefs.Invalid},
		{"no service", &api.Container{Id: "c1"}, errdefs.Invalid},
		{"bad os", &api.Container{Id: "c1", Service: "web", Os: "plan9"}, errdefs.Invalid},
		// Windows rejects the uid of api_key, as Prepare would.
		{"windows", &api.Container{Id: "c1", Service: "web", Os: "windows"}, errdefs.Invalid},
	} {
		_, err := a.Targets(ctx, &api.TargetsRequest{Container: tt.c})
		_, _, perr := a.Prepare(ctx, &api.PrepareRequest{Container: tt.c})
		if errdefs.KindOf(err) != tt.kind || errdefs.KindOf(perr) != tt.kind {
			t.Errorf("%s: Targets %v, Prepare %v; want both %s", tt.name, err, perr, tt.kind)
		}
	}
}

// A target the container already has a mount at is the container's
// configuration to fix: the attach refuses it as INVALID, naming it.
func TestPrepareCollisionIsInvalid(t *testing.T) {
	a := newAgent(t, t.TempDir(), newCache(t))
	host := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(host, []byte("the container's own"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := busybox.NewBundle(filepath.Join(t.TempDir(), "col"), busybox.Options{Mounts: []specs.Mount{
		{Destination: "/run/secrets/db_pw", Type: "bind", Source: host, Options: []string{"bind", "ro"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	r := busybox.NewRunc(t)
	ctx := busybox.Context(t)
	if err := r.Run(ctx, "col", b); err != nil {
		t.Fatal(err)
	}
	pid, err := r.Pid(ctx, "col")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = a.Prepare(context.Background(), &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "col", Service: "web", Pid: int32(pid)}})
	if errdefs.KindOf(err) != errdefs.Invalid || !strings.Contains(err.Error(), mounter.ErrMountCollision.Error()) || !strings.Contains(err.Error(), `"db_pw"`) {
		t.Fatalf("Prepare onto a mount: %v, want an INVALID collision naming db_pw", err)
	}
	if got, err := catIn(t, r, "col", "/run/secrets/db_pw"); err != nil || got != "the container's own" {
		t.Errorf("the container's file reads %q (%v)", got, err)
	}
	if held, _ := a.List(context.Background()); len(held.GetContainers()) != 0 {
		t.Errorf("the agent holds %v after the refusal", held.GetContainers())
	}
}
