package grants

import (
	"errors"
	"slices"
	"testing"

	"github.com/lockbox-project/lockbox/api/claimrule"
	"github.com/lockbox-project/lockbox/api/dispatcher"
)

func withRules(ch *dispatcher.AssignmentChange, rules ...string) *dispatcher.AssignmentChange {
	ch.GetAssignment().GetService().ClaimRules = rules
	return ch
}

// TestCacheRules: the rules a service arrives with are the ones the cache
// hands out, beside its grants; an update replaces them; rules the agent
// cannot read keep the service on the node and refuse every claim.
func TestCacheRules(t *testing.T) {
	c := NewCache()
	defer c.Close()
	pay := claimrule.Facts{Pod: &claimrule.Pod{Namespace: "payments"}, ContainerdNamespace: "k8s.io"}
	dev := claimrule.Facts{Pod: &claimrule.Pod{Namespace: "dev"}, ContainerdNamespace: "k8s.io"}
	plain := claimrule.Facts{ContainerdNamespace: "prod"}

	err := c.Apply(complete(3, secret("s1", "a", "alpha"),
		withRules(service("d", "db", "s1"), "k8s.namespace==payments"),
		service("w", "web", "s1"),
		withRules(service("n", "newer", "s1"), "k8s.serviceaccount==db")))
	if err != nil {
		t.Fatal(err)
	}
	rules, ok := c.Rules("db")
	if !ok || !slices.Equal(rules.Strings(), []string{"k8s.namespace==payments"}) {
		t.Fatalf("Rules(db) = %v, %v", rules.Strings(), ok)
	}
	if err := rules.Decide(pay); err != nil {
		t.Errorf("a payments pod refused: %v", err)
	}
	if err := rules.Decide(dev); !errors.Is(err, claimrule.ErrRefused) {
		t.Errorf("a dev pod admitted: %v", err)
	}
	r, err := c.Restrict("db")
	if err != nil || !slices.Equal(r.Rules().Strings(), rules.Strings()) {
		t.Fatalf("Restrict(db).Rules() = %v, %v", r.Rules().Strings(), err)
	}

	// No rules: the default.
	web, ok := c.Rules("web")
	if !ok || web.Len() != 0 || web.Decide(plain) != nil || web.Decide(pay) == nil {
		t.Fatalf("Rules(web) = %v, %v: want none (plain containers only)", web.Strings(), ok)
	}

	// A rule this agent cannot read: the service stays, every claim is
	// refused.
	newer, ok := c.Rules("newer")
	var re *claimrule.RefusedError
	if !ok || newer.Err() == nil || !errors.As(newer.Decide(plain), &re) || !re.Unreadable {
		t.Fatalf("Rules(newer) = %v, %v, err %v: want unreadable", newer.Strings(), ok, newer.Err())
	}
	if _, err := c.Restrict("newer"); err != nil {
		t.Fatalf("a service with unreadable rules left the node: %v", err)
	}

	if _, ok := c.Rules("nope"); ok {
		t.Fatal("Rules of a service without a grant")
	}

	// Update: db now admits dev only; the restricted view taken before
	// keeps the rules of the grants it holds.
	if err := c.Apply(incremental(4, withRules(service("d", "db", "s1"), "k8s.namespace==dev"))); err != nil {
		t.Fatal(err)
	}
	rules, _ = c.Rules("db")
	if rules.Decide(dev) != nil || rules.Decide(pay) == nil {
		t.Fatalf("after the update Rules(db) = %v", rules.Strings())
	}
	if r.Rules().Decide(pay) != nil {
		t.Fatal("an earlier Restricted changed its rules")
	}

	// Removal: no rules, no grant.
	if err := c.Apply(incremental(5, remove(service("d", "db")))); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Rules("db"); ok {
		t.Fatal("Rules of a removed service")
	}
}
