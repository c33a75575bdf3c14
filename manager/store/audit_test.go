package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/store"
)

func allAudit(t *testing.T, s *store.Store, since time.Time) []*types.AuditEntry {
	t.Helper()
	var out []*types.AuditEntry
	after := ""
	for {
		page, next, err := s.ListAudit(context.Background(), since, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page...)
		if next == "" {
			return out
		}
		after = next
	}
}

// Writes made under an actor record who did what, in the write's own
// transaction; writes without one (the manager's own) record nothing.
func TestAuditAdminWrites(t *testing.T) {
	s := newStore(t)
	ctx := store.WithAuditActor(context.Background(), "admin-0123456789ab")
	sec, err := s.CreateSecret(ctx, secretSpec("db_pw"), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateSecret(ctx, sec.Id, sec.Meta.Version, &types.SecretSpec{Labels: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	svc, err := s.CreateService(ctx, serviceSpec("web", "db_pw"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateService(ctx, svc.Id, svc.Meta.Version, serviceSpec("web")); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveService(ctx, svc.Id); err != nil {
		t.Fatal(err)
	}
	// A refused write records nothing.
	if _, err := s.CreateSecret(ctx, secretSpec("db_pw"), []byte("x")); !errors.Is(err, store.ErrNameConflict) {
		t.Fatalf("duplicate create: %v", err)
	}
	if err := s.RemoveSecret(store.WithAuditActor(context.Background(), store.AuditActorLocalRoot), "db_pw"); err != nil {
		t.Fatal(err)
	}
	// Not an admin call: no entry.
	if _, err := s.CreateSecret(context.Background(), secretSpec("other"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	got := allAudit(t, s, time.Time{})
	want := []struct{ actor, action, kind, name string }{
		{"admin-0123456789ab", store.AuditSecretCreate, "secret", "db_pw"},
		{"admin-0123456789ab", store.AuditSecretUpdate, "secret", "db_pw"},
		{"admin-0123456789ab", store.AuditServiceCreate, "service", "web"},
		{"admin-0123456789ab", store.AuditServiceUpdate, "service", "web"},
		{"admin-0123456789ab", store.AuditServiceRemove, "service", "web"},
		{store.AuditActorLocalRoot, store.AuditSecretRemove, "secret", "db_pw"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Actor != w.actor || g.Action != w.action || g.ObjectKind != w.kind || g.ObjectName != w.name || g.ObjectId == "" || g.Time == nil {
			t.Errorf("entry %d = %v, want %+v", i, g, w)
		}
	}
}

func TestAuditNeverRewritten(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.AppendAudit(ctx, &types.AuditEntry{Actor: "manager m1", Action: store.AuditGrant, NodeId: "n1"}); err != nil {
		t.Fatal(err)
	}
	got := allAudit(t, s, time.Time{})
	if len(got) != 1 {
		t.Fatalf("got %v", got)
	}
	forged := proto.Clone(got[0]).(*types.AuditEntry)
	forged.Actor, forged.Action = "someone else", store.AuditRevoke
	if err := s.AppendAudit(ctx, forged); !errors.Is(err, store.ErrExists) {
		t.Fatalf("overwriting an entry: %v, want ErrExists", err)
	}
	again := allAudit(t, s, time.Time{})
	if len(again) != 1 || !proto.Equal(again[0], got[0]) {
		t.Fatalf("entry changed: %v, was %v", again, got[0])
	}
}

func TestAuditSinceAndCompact(t *testing.T) {
	ctx := context.Background()
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := newStore(t)
	for i := 0; i < 7; i++ {
		e := &types.AuditEntry{Actor: "a", Action: store.AuditGrant, ObjectName: fmt.Sprint(i), Time: timestamppb.New(base.Add(time.Duration(i) * time.Minute))}
		if err := s.AppendAudit(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	names := func(es []*types.AuditEntry) string {
		var b strings.Builder
		for _, e := range es {
			b.WriteString(e.ObjectName)
		}
		return b.String()
	}
	for _, c := range []struct {
		since time.Time
		want  string
	}{
		{time.Time{}, "0123456"},
		{base.Add(3 * time.Minute), "3456"},
		{base.Add(3*time.Minute + time.Second), "456"},
		{base.Add(time.Hour), ""},
	} {
		if got := names(allAudit(t, s, c.since)); got != c.want {
			t.Errorf("since %v: %q, want %q", c.since, got, c.want)
		}
	}
	n, err := s.CompactAudit(ctx, store.AuditRetention{Others: 3, NodeReported: 3})
	if err != nil || n != 4 {
		t.Fatalf("compact: %d, %v; want 4 removed", n, err)
	}
	if got := names(allAudit(t, s, time.Time{})); got != "456" {
		t.Fatalf("after compaction: %q, want the newest three", got)
	}
	if n, err := s.CompactAudit(ctx, store.AuditRetention{Others: 3, NodeReported: 3}); err != nil || n != 0 {
		t.Fatalf("compact again: %d, %v", n, err)
	}
}

// No audit value holds a byte of secret data.
func TestAuditHoldsNoSecretData(t *testing.T) {
	ctx := store.WithAuditActor(context.Background(), "admin-x")
	s := newStore(t)
	marker := "MARKER-7d1c0a55e2b94f36"
	sec, err := s.CreateSecret(ctx, secretSpec("m"), []byte(marker))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveSecret(ctx, sec.Id); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Client().Get(ctx, s.Prefix()+"audit/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 2 {
		t.Fatalf("%d audit keys, want 2", len(resp.Kvs))
	}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Value), marker) || strings.Contains(string(kv.Key), marker) {
			t.Fatalf("audit key %s holds the secret's data", kv.Key)
		}
	}
}
