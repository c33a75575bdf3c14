package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/identity"
	"github.com/lockbox-project/lockbox/manager/store"
)

func desc(host, os, arch string) *types.NodeDescription {
	return &types.NodeDescription{Hostname: host, Platform: &types.Platform{Os: os, Architecture: arch}}
}

func TestValidateNodeDescription(t *testing.T) {
	long := strings.Repeat("a", store.MaxHostnameLength)
	cases := []struct {
		name string
		d    *types.NodeDescription
		ok   bool
	}{
		{"nil", nil, true},
		{"empty", &types.NodeDescription{}, true},
		{"plain", desc("web-1.example.com", "linux", "amd64"), true},
		{"upper and underscore", desc("WIN_HOST01", "windows", "arm64"), true},
		{"longest hostname", desc(long, "linux", "amd64"), true},
		{"version and warning", &types.NodeDescription{Hostname: "h", AgentVersion: "v1.2.3-4-gabc+dirty", Warnings: []string{`the volume of C:\lockbox is not BitLocker-protected`}}, true},
		{"hostname too long", desc(long+"a", "linux", "amd64"), false},
		{"escape in hostname", desc("web1\x1b[2J", "linux", "amd64"), false},
		{"OSC title in hostname", desc("web1\x1b]0;owned\a", "linux", "amd64"), false},
		{"newline in hostname", desc("web1\nweb2", "linux", "amd64"), false},
		{"space in hostname", desc("web 1", "linux", "amd64"), false},
		{"slash in hostname", desc("a/b", "linux", "amd64"), false},
		{"leading dash", desc("-rf", "linux", "amd64"), false},
		{"unicode hostname", desc("wéb", "linux", "amd64"), false},
		{"bidi override", desc("web\u202e1", "linux", "amd64"), false},
		{"upper os", desc("h", "Linux", "amd64"), false},
		{"os with escape", desc("h", "linux\x1b[31m", "amd64"), false},
		{"arch too long", desc("h", "linux", strings.Repeat("x", store.MaxPlatformLength+1)), false},
		{"C1 CSI in arch", desc("h", "linux", "amd\u009b64"), false},
		{"version with escape", &types.NodeDescription{AgentVersion: "v1\x1b[0m"}, false},
		{"version with space", &types.NodeDescription{AgentVersion: "v1 beta"}, false},
		{"warning with escape", &types.NodeDescription{Warnings: []string{"bad\x1b[2Jthing"}}, false},
		{"warning not UTF-8", &types.NodeDescription{Warnings: []string{"bad\xff"}}, false},
		{"too many warnings", &types.NodeDescription{Warnings: make([]string, store.MaxNodeWarnings+1)}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := store.ValidateNodeDescription(c.d)
			if (err == nil) != c.ok {
				t.Fatalf("ValidateNodeDescription = %v, want ok=%v", err, c.ok)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			// The message quotes the value escaped: it is safe to print.
			for _, r := range err.Error() {
				if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u202e' {
					t.Fatalf("error message carries %U: %q", r, err.Error())
				}
			}
		})
	}
}

func TestSamePlacementDescription(t *testing.T) {
	a := desc("Web1", "linux", "amd64")
	for _, c := range []struct {
		b    *types.NodeDescription
		same bool
	}{
		{desc("web1", "linux", "amd64"), true}, // DNS ignores case
		{desc("web2", "linux", "amd64"), false},
		{desc("web1", "windows", "amd64"), false},
		{desc("web1", "linux", "arm64"), false},
		{nil, false},
	} {
		if got := store.SamePlacementDescription(a, c.b); got != c.same {
			t.Errorf("SamePlacementDescription(%v, %v) = %v", a, c.b, got)
		}
	}
}

// A join cannot take a hostname a live worker holds (in any case), nor
// carry a description that breaks the rules; removing the holder frees
// the hostname. Managers may share a host with one another and with its
// agent.
func TestNodeHostnameFixedAndUnique(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	worker := func(host string) *types.Node {
		return &types.Node{Id: identity.NewID(), Role: types.NodeRole_NODE_ROLE_WORKER, Description: desc(host, "linux", "amd64")}
	}
	a, err := s.CreateNode(ctx, worker("web1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"web1", "WEB1"} {
		_, err := s.CreateNode(ctx, worker(host))
		if !errors.Is(err, store.ErrNameConflict) || !strings.Contains(err.Error(), a.Id) {
			t.Fatalf("join as %s while %s holds web1: %v", host, a.Id, err)
		}
	}
	if _, err := s.CreateNode(ctx, worker("evil\x1b[2J")); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("join with an escape sequence: %v", err)
	}
	// A manager on the same host, and a second one, are recorded.
	for range 2 {
		if _, err := s.CreateNode(ctx, &types.Node{Id: identity.NewID(), Role: types.NodeRole_NODE_ROLE_MANAGER, Description: desc("web1", "linux", "amd64")}); err != nil {
			t.Fatalf("manager on web1: %v", err)
		}
	}
	// Status writes keep the hostname and do not free it.
	if _, err := s.UpdateNode(ctx, a.Id, func(n *types.Node) error { n.State = types.NodeState_NODE_STATE_DOWN; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateNode(ctx, worker("web1")); !errors.Is(err, store.ErrNameConflict) {
		t.Fatalf("join as web1 while it is down: %v", err)
	}
	if _, err := s.RemoveNode(ctx, a.Id); err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateNode(ctx, worker("Web1"))
	if err != nil {
		t.Fatalf("join as Web1 after web1 was removed: %v", err)
	}
	if _, err := s.CreateNode(ctx, worker("web1")); !errors.Is(err, store.ErrNameConflict) || !strings.Contains(err.Error(), b.Id) {
		t.Fatalf("join as web1 while %s holds it: %v", b.Id, err)
	}
}

// Nodes recorded before the hostname index existed are brought into it:
// a join with such a node's hostname is refused too.
func TestNodeHostnameIndexesOlderRecords(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	old := &types.Node{Id: identity.NewID(), Role: types.NodeRole_NODE_ROLE_WORKER, Description: desc("legacy", "linux", "amd64"), Meta: &types.Meta{}}
	b, err := proto.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().Put(ctx, s.Prefix()+"nodes/"+old.Id, string(b)); err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateNode(ctx, &types.Node{Id: identity.NewID(), Role: types.NodeRole_NODE_ROLE_WORKER, Description: desc("LEGACY", "linux", "amd64")})
	if !errors.Is(err, store.ErrNameConflict) || !strings.Contains(err.Error(), old.Id) {
		t.Fatalf("join with an older node's hostname: %v", err)
	}
	// The older record keeps its description.
	got, err := s.GetNode(ctx, old.Id)
	if err != nil || got.GetDescription().GetHostname() != "legacy" {
		t.Fatalf("older node: %v %v", got, err)
	}
}

// Whatever a node sends, a description that passes holds nothing a
// terminal acts on, and the error of one that fails is printable too.
func FuzzValidateNodeDescription(f *testing.F) {
	f.Add("web-1", "linux", "amd64", "v1.0.0", "warning")
	f.Add("evil\x1b[2J", "linux", "amd64", "", "")
	f.Add("h", "os\u009b", "arch", "v\x00", "w\u202e")
	f.Fuzz(func(t *testing.T, host, os, arch, version, warning string) {
		d := &types.NodeDescription{Hostname: host, Platform: &types.Platform{Os: os, Architecture: arch}, AgentVersion: version, Warnings: []string{warning}}
		err := store.ValidateNodeDescription(d)
		check := func(what, s string) {
			for _, r := range s {
				if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || (r >= 0x200b && r <= 0x200f) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
					t.Fatalf("%s carries %U: %q", what, r, s)
				}
			}
		}
		if err != nil {
			check("error", err.Error())
			return
		}
		for _, s := range []string{host, os, arch, version, warning} {
			check("valid field", s)
		}
		if len(host) > store.MaxHostnameLength {
			t.Fatalf("hostname of %d bytes passed", len(host))
		}
	})
}
