package dispatcher

import (
	"testing"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
)

// The attack of issue 10 finding 2: a node that joined as "attacker"
// opens its session saying it is "victim", on victim's platform. Before
// the fix the session's description replaced the joined one and the
// attacker was handed every grant placed by hostname or platform on the
// victim; now placement keeps reading what the node joined with.
func TestSessionReportCannotClaimAnotherNodesGrants(t *testing.T) {
	h := newHarness(t)
	join := func(host, os string) string {
		n, err := h.st.CreateNode(h.ctx, &types.Node{Description: &types.NodeDescription{Hostname: host, Platform: &types.Platform{Os: os, Architecture: "amd64"}}})
		if err != nil {
			t.Fatal(err)
		}
		return n.Id
	}
	victim := join("victim", "windows")
	attacker := join("attacker", "linux")
	h.service("by-host", []string{"node.hostname==victim"}, h.secret("host-secret", "for victim only"))
	h.service("by-os", []string{"node.platform.os==windows"}, h.secret("os-secret", "for windows only"))

	claim := &types.NodeDescription{Hostname: "victim", Platform: &types.Platform{Os: "windows", Architecture: "amd64"}, AgentVersion: "v9"}
	if _, err := h.d.markReady(h.ctx, attacker, claim, "10.0.0.66", allCaps); err != nil {
		t.Fatalf("the node is still served: %v", err)
	}
	c := h.connect(attacker, 0)
	expect(t, c.next(), dapi.SessionMessage_COMPLETE) // nothing

	n, err := h.st.GetNode(h.ctx, attacker)
	if err != nil {
		t.Fatal(err)
	}
	if n.GetDescription().GetHostname() != "attacker" || n.GetDescription().GetPlatform().GetOs() != "linux" {
		t.Fatalf("joined description changed: %v", n.GetDescription())
	}
	if n.GetReported().GetHostname() != "victim" || n.GetReported().GetPlatform().GetOs() != "windows" {
		t.Fatalf("reported description not kept apart: %v", n.GetReported())
	}
	if n.GetDescription().GetAgentVersion() != "v9" {
		t.Fatalf("agent version not followed: %v", n.GetDescription())
	}

	// The constraints do place: the real victim gets both.
	if _, err := h.d.markReady(h.ctx, victim, &types.NodeDescription{Hostname: "victim", Platform: &types.Platform{Os: "windows", Architecture: "amd64"}}, "", allCaps); err != nil {
		t.Fatal(err)
	}
	v := h.connect(victim, 0)
	expect(t, v.next(), dapi.SessionMessage_COMPLETE, "+secret:host-secret=for victim only", "+secret:os-secret=for windows only", "+service:by-host[host-secret]", "+service:by-os[os-secret]")
	if n, _ := h.st.GetNode(h.ctx, victim); n.GetReported() != nil {
		t.Fatalf("a session that agrees with the join is reported apart: %v", n.GetReported())
	}
}

// What a session reports is never stored raw when it breaks the rules,
// and a report that agrees (or says nothing) clears the note.
func TestReportedDescription(t *testing.T) {
	joined := &types.NodeDescription{Hostname: "web1", Platform: &types.Platform{Os: "linux", Architecture: "amd64"}}
	cases := []struct {
		name    string
		session *types.NodeDescription
		want    *types.NodeDescription // nil: nothing reported
		note    bool
	}{
		{"nothing", nil, nil, false},
		{"same", &types.NodeDescription{Hostname: "WEB1", Platform: &types.Platform{Os: "linux", Architecture: "amd64"}}, nil, false},
		{"leaves fields out", &types.NodeDescription{AgentVersion: "v2"}, nil, false},
		{"other hostname", &types.NodeDescription{Hostname: "web2"}, &types.NodeDescription{Hostname: "web2", Platform: joined.Platform}, false},
		{"other platform", &types.NodeDescription{Platform: &types.Platform{Os: "windows", Architecture: "amd64"}}, &types.NodeDescription{Hostname: "web1", Platform: &types.Platform{Os: "windows", Architecture: "amd64"}}, false},
		{"escape sequence", &types.NodeDescription{Hostname: "web2\x1b[2J"}, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := reportedDescription(joined, c.session)
			switch {
			case c.note:
				if got == nil || got.Hostname != "" || len(got.Warnings) != 1 {
					t.Fatalf("got %v, want a note only", got)
				}
				for _, r := range got.Warnings[0] {
					if r < 0x20 || r == 0x7f {
						t.Fatalf("note carries %U: %q", r, got.Warnings[0])
					}
				}
			case c.want == nil:
				if got != nil {
					t.Fatalf("got %v, want nothing", got)
				}
			default:
				if got.GetHostname() != c.want.Hostname || got.GetPlatform().GetOs() != c.want.GetPlatform().GetOs() || got.GetPlatform().GetArchitecture() != c.want.GetPlatform().GetArchitecture() {
					t.Fatalf("got %v, want %v", got, c.want)
				}
			}
		})
	}
}
