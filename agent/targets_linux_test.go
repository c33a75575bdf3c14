package agent

import (
	"context"
	"slices"
	"testing"

	"github.com/lockbox-project/lockbox/agent/errdefs"
	api "github.com/lockbox-project/lockbox/api/agent"
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
