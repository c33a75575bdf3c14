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

// nodeEntry is a node-reported entry of node at t, named name.
func nodeEntry(node, name string, t time.Time) *types.AuditEntry {
	return &types.AuditEntry{Actor: store.AuditActorNode(node), Action: store.AuditMount, NodeId: node, ObjectKind: "service",
		ObjectName: name, Container: "c-" + name, Time: timestamppb.New(t)}
}

// appendNodeReports appends n node-reported entries of node, named
// prefix0, prefix1..., a millisecond apart from start, in full batches.
func appendNodeReports(t *testing.T, s *store.Store, node, prefix string, start time.Time, n int) {
	t.Helper()
	for i := 0; i < n; {
		var batch []*types.AuditEntry
		for ; i < n && len(batch) < store.MaxAuditAppend; i++ {
			batch = append(batch, nodeEntry(node, fmt.Sprint(prefix, i), start.Add(time.Duration(i)*time.Millisecond)))
		}
		if err := s.AppendNodeAudit(context.Background(), node, batch...); err != nil {
			t.Fatal(err)
		}
	}
}

// putOldLayout writes e where managers wrote every entry before node
// reports had a class of their own: under audit/, whatever its actor.
func putOldLayout(t *testing.T, s *store.Store, e *types.AuditEntry) {
	t.Helper()
	b, err := proto.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("%saudit/%020d-%s", s.Prefix(), e.Time.AsTime().UnixNano(), e.Id)
	if _, err := s.Client().Put(context.Background(), key, string(b)); err != nil {
		t.Fatal(err)
	}
}

// The attack: an admin creates a secret, a manager grants it; then a node
// (a hostile or broken agent at its full report budget) reports more
// entries than the log's whole retention, and the leader compacts. The
// admin's and the manager's entries must still be listed. On the code
// before node reports had a budget of their own (one count for the whole
// log, CompactAudit(ctx, keep)), compaction removed them: the reports were
// the newest keep entries.
func TestAuditNodeReportsCannotFlushOthers(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	keep := store.AuditRetention{Others: 4, NodeReported: 4}
	if _, err := s.CreateSecret(store.WithAuditActor(ctx, "admin-0123456789ab"), secretSpec("db_pw"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx, &types.AuditEntry{Actor: store.AuditActorManager("m1"), Action: store.AuditGrant, NodeId: "evil", ObjectName: "web"}); err != nil {
		t.Fatal(err)
	}
	flood := 3 * (keep.Others + keep.NodeReported + store.MaxAuditAppend)
	appendNodeReports(t, s, "evil", "r", time.Now(), flood)

	removed, err := s.CompactAudit(ctx, keep)
	if err != nil {
		t.Fatal(err)
	}
	if want := flood - keep.NodeReported; removed != want {
		t.Errorf("compaction removed %d entries, want %d (node reports only)", removed, want)
	}
	var others, reports []string
	for _, e := range allAudit(t, s, time.Time{}) {
		if e.Actor == store.AuditActorNode("evil") {
			reports = append(reports, e.ObjectName)
			continue
		}
		others = append(others, e.Actor+" "+e.Action+" "+e.ObjectName)
	}
	if want := []string{"admin-0123456789ab secret.create db_pw", "manager m1 grant web"}; strings.Join(others, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after a flood of node reports, the rest of the log is %q, want %q", others, want)
	}
	var want []string
	for i := flood - keep.NodeReported; i < flood; i++ {
		want = append(want, fmt.Sprint("r", i))
	}
	if strings.Join(reports, ",") != strings.Join(want, ",") {
		t.Fatalf("node reports kept %q, want the newest %d: %q", reports, keep.NodeReported, want)
	}
}

// One listing of both classes, and of entries in the old layout: time
// order, then ID (across classes too), since, and pages of every size, so
// page boundaries fall between classes, inside one and on equal times.
func TestAuditListAcrossClasses(t *testing.T) {
	ctx := context.Background()
	base := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	at := func(m int) *timestamppb.Timestamp { return timestamppb.New(base.Add(time.Duration(m) * time.Minute)) }
	s := newStore(t)
	other := func(id string, m int) {
		t.Helper()
		if err := s.AppendAudit(ctx, &types.AuditEntry{Id: id, Actor: "admin-x", Action: store.AuditSecretCreate, ObjectName: id, Time: at(m)}); err != nil {
			t.Fatal(err)
		}
	}
	node := func(id string, m int) {
		t.Helper()
		e := nodeEntry("n1", id, time.Time{})
		e.Id, e.Time = id, at(m)
		if err := s.AppendNodeAudit(ctx, "n1", e); err != nil {
			t.Fatal(err)
		}
	}
	other("o0", 0)
	node("n1", 1)
	node("n2", 2)
	other("o3", 3)
	putOldLayout(t, s, &types.AuditEntry{Id: "old4", Actor: store.AuditActorNode("n0"), Action: store.AuditWipe, NodeId: "n0", ObjectName: "old4", Time: at(4)})
	node("n5", 5)
	// Equal times: ID order decides, whatever the class.
	node("a6", 6)
	other("b6", 6)
	node("c6", 6)
	other("o7", 7)
	putOldLayout(t, s, &types.AuditEntry{Id: "old8", Actor: "admin-y", Action: store.AuditSecretRemove, ObjectName: "old8", Time: at(8)})
	node("n9", 9)
	all := []string{"o0", "n1", "n2", "o3", "old4", "n5", "a6", "b6", "c6", "o7", "old8", "n9"}

	list := func(since time.Time, size int) ([]string, []string) {
		t.Helper()
		var names, tokens []string
		after := ""
		for pages := 0; ; pages++ {
			if pages > len(all) {
				t.Fatalf("page size %d: listing does not end", size)
			}
			page, next, err := s.ListAudit(ctx, since, after, size)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > size {
				t.Fatalf("page of %d entries, asked for %d", len(page), size)
			}
			for _, e := range page {
				names = append(names, e.ObjectName)
			}
			if next == "" {
				return names, tokens
			}
			tokens = append(tokens, next)
			after = next
		}
	}
	for _, c := range []struct {
		since time.Time
		skip  int // entries older than since
	}{
		{time.Time{}, 0},
		{base.Add(2 * time.Minute), 2},
		{base.Add(4 * time.Minute), 4},
		{base.Add(6 * time.Minute), 6},
		{base.Add(6*time.Minute + 1), 9},
		{base.Add(time.Hour), len(all)},
	} {
		for size := 1; size <= len(all)+1; size++ {
			got, _ := list(c.since, size)
			if want := all[c.skip:]; strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("since %v, pages of %d: %q, want %q", c.since, size, got, want)
			}
		}
	}
	// A page ending on an entry of one class hands back its key suffix:
	// the next page starts with the other class's next entry.
	_, tokens := list(time.Time{}, 3)
	if want := fmt.Sprintf("%020d-n2", at(2).AsTime().UnixNano()); len(tokens) == 0 || tokens[0] != want {
		t.Fatalf("first token %q, want %q", tokens, want)
	}
	page, _, err := s.ListAudit(ctx, time.Time{}, tokens[0], 1)
	if err != nil || len(page) != 1 || page[0].ObjectName != "o3" {
		t.Fatalf("page after %s: %v, %v; want o3", tokens[0], page, err)
	}
	if _, _, err := s.ListAudit(ctx, time.Time{}, "x/y", 1); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("token with a slash: %v, want ErrInvalid", err)
	}
}

// Compaction keeps exactly each class's budget, the newest of each;
// entries in the old layout count as the class they sit in (others).
func TestAuditCompactPerClass(t *testing.T) {
	base := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, c := range []struct {
		name          string
		others, nodes int // entries written (others: 1 in the old layout)
		keep          store.AuditRetention
	}{
		{"both over", 6, 9, store.AuditRetention{Others: 3, NodeReported: 2}},
		{"others over", 6, 2, store.AuditRetention{Others: 1, NodeReported: 5}},
		{"nodes over", 2, 9, store.AuditRetention{Others: 5, NodeReported: 1}},
		{"none over", 3, 3, store.AuditRetention{Others: 3, NodeReported: 3}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			s := newStore(t)
			// Interleaved in time, the old-layout node report the oldest.
			putOldLayout(t, s, &types.AuditEntry{Id: "old", Actor: store.AuditActorNode("n0"), Action: store.AuditMount, NodeId: "n0", ObjectName: "o0", Time: timestamppb.New(base)})
			for i := 1; i < c.others; i++ {
				e := &types.AuditEntry{Actor: "admin-x", Action: store.AuditSecretCreate, ObjectName: fmt.Sprint("o", i), Time: timestamppb.New(base.Add(time.Duration(2*i) * time.Second))}
				if err := s.AppendAudit(ctx, e); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < c.nodes; i++ {
				if err := s.AppendNodeAudit(ctx, "n1", nodeEntry("n1", fmt.Sprint("n", i), base.Add(time.Duration(2*i+1)*time.Second))); err != nil {
					t.Fatal(err)
				}
			}
			wantOthers, wantNodes := newest("o", c.others, c.keep.Others), newest("n", c.nodes, c.keep.NodeReported)
			removed, err := s.CompactAudit(ctx, c.keep)
			if want := c.others + c.nodes - len(wantOthers) - len(wantNodes); err != nil || removed != want {
				t.Fatalf("compact: %d removed, %v; want %d", removed, err, want)
			}
			var others, nodes []string
			for _, e := range allAudit(t, s, time.Time{}) {
				if e.Actor == store.AuditActorNode("n1") {
					nodes = append(nodes, e.ObjectName)
				} else {
					others = append(others, e.ObjectName)
				}
			}
			if strings.Join(others, ",") != strings.Join(wantOthers, ",") || strings.Join(nodes, ",") != strings.Join(wantNodes, ",") {
				t.Fatalf("kept others %q and node reports %q; want %q and %q", others, nodes, wantOthers, wantNodes)
			}
			if n, err := s.CompactAudit(ctx, c.keep); err != nil || n != 0 {
				t.Fatalf("compact again: %d, %v", n, err)
			}
		})
	}
}

// newest is the names prefix<n-keep>..prefix<n-1> (all n when fewer).
func newest(prefix string, n, keep int) []string {
	var out []string
	for i := max(0, n-keep); i < n; i++ {
		out = append(out, fmt.Sprint(prefix, i))
	}
	return out
}

// Where an entry goes is the caller's choice of method, checked: a node's
// entry cannot be appended as anyone else's (it would count against the
// others' budget), an entry by anyone else cannot be appended as a node's,
// and one (time, ID) names one entry of the whole log.
func TestAuditAppendClassRules(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name string
		run  func() error
		want error
	}{
		{"node entry as others", func() error { return s.AppendAudit(ctx, nodeEntry("n1", "x", at)) }, store.ErrInvalid},
		{"admin entry as a node's", func() error {
			return s.AppendNodeAudit(ctx, "n1", &types.AuditEntry{Actor: "admin-x", Action: store.AuditSecretRemove, NodeId: "n1"})
		}, store.ErrInvalid},
		{"another node's entry", func() error { return s.AppendNodeAudit(ctx, "n1", nodeEntry("n2", "x", at)) }, store.ErrInvalid},
		{"entry about another node", func() error {
			e := nodeEntry("n1", "x", at)
			e.NodeId = "n2"
			return s.AppendNodeAudit(ctx, "n1", e)
		}, store.ErrInvalid},
		{"no node", func() error { return s.AppendNodeAudit(ctx, "", nodeEntry("", "x", at)) }, store.ErrInvalid},
		{"first", func() error {
			return s.AppendAudit(ctx, &types.AuditEntry{Id: "same", Actor: "admin-x", Action: store.AuditSecretCreate, Time: timestamppb.New(at)})
		}, nil},
		{"same suffix as a node's", func() error {
			e := nodeEntry("n1", "x", at)
			e.Id = "same"
			return s.AppendNodeAudit(ctx, "n1", e)
		}, store.ErrExists},
	} {
		if err := c.run(); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if got := allAudit(t, s, time.Time{}); len(got) != 1 || got[0].Actor != "admin-x" {
		t.Fatalf("log %v, want only the first entry", got)
	}
	if _, err := s.CompactAudit(ctx, store.AuditRetention{Others: 0, NodeReported: 5}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("compact to nothing: %v, want ErrInvalid", err)
	}
}
