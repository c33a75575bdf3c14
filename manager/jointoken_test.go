//go:build linux

package manager

import (
	"context"
	"strings"
	"testing"
	"time"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
)

// A manager join token gets one manager join: a second manager joining
// with it is refused with a message naming the node that used it, and
// registers nothing. Worker tokens stay reusable.
func TestManagerTokenIsSingleUse(t *testing.T) {
	ctx := context.Background()
	m1 := startManager(t, testConfig(t, "127.0.0.1"))
	adm := m1.admin()
	tok := token(t, adm, types.NodeRole_NODE_ROLE_MANAGER, false)

	cfg2 := testConfig(t, "127.0.0.2")
	cfg2.JoinAddr, cfg2.JoinToken = m1.Addr(), []byte(tok)
	m2 := startManager(t, cfg2)

	cfg3 := testConfig(t, "127.0.0.3")
	cfg3.JoinAddr, cfg3.JoinToken = m1.Addr(), []byte(tok)
	m3, err := New(cfg3)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = m3.Run(rctx)
	if err == nil {
		t.Fatal("a second manager joined with a used manager token")
	}
	for _, want := range []string{"manager join tokens are single-use", "used by node " + m2.NodeID(), "lockbox join-token manager"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refused join: %q does not say %q", err, want)
		}
	}
	r, err := adm.ListNodes(ctx, &adminapi.ListNodesRequest{})
	if err != nil || len(r.Nodes) != 2 {
		t.Fatalf("nodes after a refused reuse: %v (%v), want the two managers", r.GetNodes(), err)
	}

	// The token printed now is a fresh one, and it works.
	next := token(t, adm, types.NodeRole_NODE_ROLE_MANAGER, false)
	if next == tok {
		t.Fatal("join-token manager prints the used token")
	}
	cfg3 = testConfig(t, "127.0.0.3")
	cfg3.JoinAddr, cfg3.JoinToken = m1.Addr(), []byte(next)
	startManager(t, cfg3)

	// Two workers join with one worker token.
	wtok := token(t, adm, types.NodeRole_NODE_ROLE_WORKER, false)
	a, b := joinNode(t, m1.Addr(), wtok, "a"), joinNode(t, m1.Addr(), wtok, "b")
	if a.id == b.id {
		t.Fatal("two workers got one identity")
	}
	if r, err := adm.ListNodes(ctx, &adminapi.ListNodesRequest{}); err != nil || len(r.Nodes) != 5 {
		t.Fatalf("nodes: %v (%v), want 3 managers and 2 workers", r.GetNodes(), err)
	}
}
