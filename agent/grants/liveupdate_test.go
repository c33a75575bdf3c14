package grants

import (
	"testing"

	"github.com/lockbox-project/lockbox/api/dispatcher"
)

// TestLiveUpdateFromWire: a service's live_update and each grant's signal
// reach the view the agent mounts from.
func TestLiveUpdateFromWire(t *testing.T) {
	c := NewCache()
	defer c.Close()
	live := service("w", "web", "s1", "s2")
	sg := live.GetAssignment().GetService()
	sg.LiveUpdate = true
	sg.Grants[0].Signal = "SIGHUP"
	if err := c.Apply(complete(1, secret("s1", "a", "alpha"), secret("s2", "b", "bravo"), live, service("d", "db", "s1"))); err != nil {
		t.Fatal(err)
	}
	web, err := c.Restrict("web")
	if err != nil {
		t.Fatal(err)
	}
	if !web.LiveUpdate() {
		t.Error("web: LiveUpdate false, the wire says true")
	}
	if gs := web.Grants(); gs[0].Signal != "SIGHUP" || gs[1].Signal != "" {
		t.Errorf("web grants' signals: %q %q", gs[0].Signal, gs[1].Signal)
	}
	db, err := c.Restrict("db")
	if err != nil {
		t.Fatal(err)
	}
	if db.LiveUpdate() {
		t.Error("db: LiveUpdate true, the wire says false")
	}
}

// TestChanged: the channel taken before a message is closed once it is
// applied, and a fresh one waits for the next; a refused message closes
// nothing.
func TestChanged(t *testing.T) {
	c := NewCache()
	defer c.Close()
	ch := c.Changed()
	select {
	case <-ch:
		t.Fatal("Changed closed before any message")
	default:
	}
	if err := c.Apply(complete(1, secret("s1", "a", "alpha"), service("w", "web", "s1"))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("Changed not closed by an applied message")
	}
	next := c.Changed()
	if err := c.Apply(&dispatcher.SessionMessage{Type: dispatcher.SessionMessage_INCREMENTAL, Revision: 0}); err == nil {
		t.Fatal("an older revision was applied")
	}
	select {
	case <-next:
		t.Fatal("Changed closed by a refused message")
	default:
	}
}
