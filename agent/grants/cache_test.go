package grants

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func read(t *testing.T, r *Restricted, id string) (string, error) {
	t.Helper()
	var out string
	err := r.WithSecret(id, func(b []byte) error {
		out = string(b)
		return nil
	})
	return out, err
}

func TestCache(t *testing.T) {
	c := NewCache()
	defer c.Close()
	msg := complete(5, secret("s1", "a", "alpha"), secret("s2", "b", "bravo"), secret("s3", "c", "charlie"),
		service("w", "web", "s1", "s2"), service("d", "db", "s3"))
	msg.NodeId = "node-1"
	datas := [][]byte{}
	for _, ch := range msg.Changes {
		if s := ch.GetAssignment().GetSecret(); s != nil {
			datas = append(datas, s.Data)
		}
	}
	if err := c.Apply(msg); err != nil {
		t.Fatal(err)
	}
	for _, d := range datas {
		if !bytes.Equal(d, make([]byte, len(d))) {
			t.Errorf("message data %q not zeroed after Apply", d)
		}
	}
	if svcs, secs := c.Counts(); svcs != 2 || secs != 3 || c.Revision() != 5 || c.NodeID() != "node-1" {
		t.Fatalf("counts %d %d rev %d node %q", svcs, secs, c.Revision(), c.NodeID())
	}

	web, err := c.Restrict("web")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := read(t, web, "s1"); err != nil || got != "alpha" {
		t.Errorf("web s1: %q %v", got, err)
	}
	if gs := web.Grants(); len(gs) != 2 || gs[1].Size != int64(len("bravo")) {
		t.Errorf("web grants %+v", gs)
	}
	// Least privilege: web cannot read db's secret, though the node has it.
	if _, err := read(t, web, "s3"); !errors.Is(err, ErrNotDelivered) {
		t.Errorf("web read s3: %v", err)
	}

	_, err = c.Restrict("nope")
	var ng *NotGrantedError
	if !errors.As(err, &ng) || ng.Service != "nope" || ng.NodeID != "node-1" {
		t.Fatalf("restrict unknown service: %v", err)
	}
	if msg := err.Error(); msg != `service "nope" has no grant on node node-1` {
		t.Errorf("message %q", msg)
	}

	// Remove s2 from web: a view taken before sees its bytes gone.
	if err := c.Apply(incremental(6, service("w", "web", "s1"), remove(secret("s2", "", "")))); err != nil {
		t.Fatal(err)
	}
	if _, err := read(t, web, "s2"); !errors.Is(err, ErrNotDelivered) {
		t.Errorf("read of a removed grant: %v", err)
	}
	if _, secs := c.Counts(); secs != 2 || c.Dropped() != 1 {
		t.Errorf("%d secrets held, %d dropped; want 2 and 1", secs, c.Dropped())
	}

	// A bad message changes nothing and still zeroes its data.
	bad := incremental(3, secret("s9", "z", "zulu"))
	data := bad.Changes[0].GetAssignment().GetSecret().Data
	if err := c.Apply(bad); err == nil {
		t.Fatal("stale message applied")
	}
	if !bytes.Equal(data, make([]byte, 4)) || c.Revision() != 6 {
		t.Errorf("after a refused message: data %q, revision %d", data, c.Revision())
	}

	c.Close()
	if _, err := read(t, web, "s1"); !errors.Is(err, ErrNotDelivered) {
		t.Errorf("read after close: %v", err)
	}
	if err := c.Apply(complete(7)); err == nil {
		t.Error("closed cache accepted a message")
	}
}

func TestNotGrantedBeforeFirstMessage(t *testing.T) {
	c := NewCache()
	defer c.Close()
	c.SetNodeID("n1")
	_, err := c.Restrict("web")
	var ng *NotGrantedError
	if !errors.As(err, &ng) || !ng.NoSnapshot || !strings.Contains(err.Error(), "not received its grants") {
		t.Fatalf("before any message: %v", err)
	}
	if err := c.Apply(complete(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Restrict("web"); !errors.As(err, &ng) || ng.NoSnapshot {
		t.Fatalf("after a snapshot: %v", err)
	}
}

func TestServiceNames(t *testing.T) {
	c := NewCache()
	defer c.Close()
	if err := c.Apply(complete(1, secret("s1", "a", "x"), service("2", "zeta", "s1"), service("1", "alpha"))); err != nil {
		t.Fatal(err)
	}
	if got := c.ServiceNames(); len(got) != 2 || got[0] != "alpha" || got[1] != "zeta" {
		t.Errorf("names %v", got)
	}
}
