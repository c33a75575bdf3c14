package dispatcher

import (
	"slices"
	"testing"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
)

// serviceRules is the claim rules of the one service change in m.
func serviceRules(t *testing.T, m *dapi.SessionMessage, name string) []string {
	t.Helper()
	for _, c := range m.Changes {
		if s := c.GetAssignment().GetService(); s != nil && s.ServiceName == name {
			return s.ClaimRules
		}
	}
	t.Fatalf("no change of service %s in %v", name, summary(m))
	return nil
}

// TestClaimRulesReachNodes: a service's claim rules travel with its grants,
// in the snapshot and in increments, and a change of the rules alone is
// sent to the nodes the service is placed on.
func TestClaimRulesReachNodes(t *testing.T) {
	h := newHarness(t)
	a := h.node("a", nil)
	s1 := h.secret("s1", "one")
	sp := spec("db", nil, s1)
	sp.ClaimRules = []string{"k8s.namespace==payments"}
	db, err := h.st.CreateService(h.ctx, sp)
	if err != nil {
		t.Fatal(err)
	}
	c := h.connect(a, 0)
	m := c.next()
	expect(t, m, dapi.SessionMessage_COMPLETE, "+secret:s1=one", "+service:db[s1]")
	if got := serviceRules(t, m, "db"); !slices.Equal(got, sp.ClaimRules) {
		t.Fatalf("snapshot: rules %q, want %q", got, sp.ClaimRules)
	}

	// Only the rules change: the node gets the service again, with them.
	sp = spec("db", nil, s1)
	sp.ClaimRules = []string{"k8s.namespace==dev", "k8s.pod.label.app==db"}
	db, err = h.st.UpdateService(h.ctx, db.Id, db.Meta.Version, sp)
	if err != nil {
		t.Fatal(err)
	}
	m = c.next()
	expect(t, m, dapi.SessionMessage_INCREMENTAL, "+service:db[s1]")
	if got := serviceRules(t, m, "db"); !slices.Equal(got, sp.ClaimRules) {
		t.Fatalf("increment: rules %q, want %q", got, sp.ClaimRules)
	}

	// Rules removed: the increment carries none.
	if _, err := h.st.UpdateService(h.ctx, db.Id, db.Meta.Version, spec("db", nil, s1)); err != nil {
		t.Fatal(err)
	}
	m = c.next()
	expect(t, m, dapi.SessionMessage_INCREMENTAL, "+service:db[s1]")
	if got := serviceRules(t, m, "db"); len(got) != 0 {
		t.Fatalf("rules %q after they were removed", got)
	}
}
