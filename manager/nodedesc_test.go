//go:build linux

package manager

import (
	"context"
	"strings"
	"testing"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Issue 10 finding 2, end to end over real TLS: a holder of the worker
// token joins under its own name, then opens its session saying it is
// another node. It gets none of the grants placed on that node by
// hostname or platform (before the fix it got them all), it cannot join a
// second time under that node's hostname, and a description carrying
// terminal escapes is refused at join.
func TestNodeCannotClaimAnotherNodesHostname(t *testing.T) {
	ctx := context.Background()
	m := startManager(t, testConfig(t, "127.0.0.1"))
	adm := m.admin()
	wtok := token(t, adm, types.NodeRole_NODE_ROLE_WORKER, false)
	victimDesc := &types.NodeDescription{Hostname: "victim", Platform: &types.Platform{Os: "windows", Architecture: "amd64"}}
	victim, err := joinNodeAs(t, m.Addr(), wtok, victimDesc)
	if err != nil {
		t.Fatal(err)
	}
	attacker, err := joinNodeAs(t, m.Addr(), wtok, &types.NodeDescription{Hostname: "attacker", Platform: &types.Platform{Os: "linux", Architecture: "amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	createService(t, adm, "by-host", []string{"node.hostname==victim"}, createSecret(t, adm, "host-secret", "victim's"))
	createService(t, adm, "by-os", []string{"node.platform.os==windows"}, createSecret(t, adm, "os-secret", "windows'"))

	// The victim receives both: the constraints place, and the index has
	// both services before the attacker connects.
	vs := victim.sessionAs(t, m.Addr(), 0, victimDesc)
	vs.until(func(m *dapi.SessionMessage) bool {
		return names(m)["+service:by-host"] && names(m)["+service:by-os"]
	})

	as := attacker.sessionAs(t, m.Addr(), 0, victimDesc)
	first := as.next()
	if first.Type != dapi.SessionMessage_COMPLETE || len(first.Changes) != 0 {
		t.Fatalf("a node reporting the victim's hostname and platform got %v %v", first.Type, names(first))
	}
	// It is still served, and operators see what it claims, apart.
	n, err := adm.GetNode(ctx, &adminapi.GetNodeRequest{NameOrId: attacker.id})
	if err != nil {
		t.Fatal(err)
	}
	if n.Node.GetDescription().GetHostname() != "attacker" || n.Node.GetReported().GetHostname() != "victim" || n.Node.State != types.NodeState_NODE_STATE_READY {
		t.Fatalf("attacker's node: %v", n.Node)
	}

	// A second join under the victim's hostname (any case) is refused,
	// naming the node that holds it.
	_, err = joinNodeAs(t, m.Addr(), wtok, &types.NodeDescription{Hostname: "VICTIM", Platform: &types.Platform{Os: "windows", Architecture: "amd64"}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "join refused") || !strings.Contains(err.Error(), victim.id) || strings.Contains(err.Error(), "rpc error") {
		t.Fatalf("join with a live node's hostname: %v", err)
	}
	// Escapes and control characters never get in.
	for _, d := range []*types.NodeDescription{
		{Hostname: "evil\x1b[2J\x1b]0;pwned\a"},
		{Hostname: "ok", Platform: &types.Platform{Os: "linux\r\n"}},
		{Hostname: "ok2", AgentVersion: "v1\x1b[31m"},
	} {
		_, err := joinNodeAs(t, m.Addr(), wtok, d)
		if err == nil || !strings.Contains(err.Error(), "join refused") || strings.ContainsAny(err.Error(), "\x1b\r\a") {
			t.Fatalf("join as %q: %v", d, err)
		}
	}
	r, err := adm.ListNodes(ctx, &adminapi.ListNodesRequest{})
	if err != nil || len(r.Nodes) != 3 { // the manager, victim, attacker
		t.Fatalf("nodes after refused joins: %v (%v)", r.GetNodes(), err)
	}

	// Once the victim is removed, its hostname can join again.
	if _, err := adm.RemoveNode(ctx, &adminapi.RemoveNodeRequest{NameOrId: victim.id, Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := joinNodeAs(t, m.Addr(), wtok, victimDesc); err != nil {
		t.Fatalf("join as a removed node's hostname: %v", err)
	}
}
