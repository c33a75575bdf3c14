package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/lockbox-project/lockbox/manager/store"
)

// nodeRows is every row of the services given as "node/container",
// sorted.
func nodeRows(t *testing.T, s *store.Store, svcs ...string) []string {
	t.Helper()
	var out []string
	for _, svc := range svcs {
		for _, r := range rowsOf(t, s, svc) {
			out = append(out, strings.Fields(r)[0])
		}
	}
	slices.Sort(out)
	return out
}

func reconciled(rs []store.ReconciledContainer) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.ServiceID+"/"+r.ContainerID)
	}
	slices.Sort(out)
	return out
}

// A node's inventory removes its rows of containers it no longer holds,
// and nothing of another node's; an invalid one removes nothing.
func TestReconcileNodeContainers(t *testing.T) {
	ctx := context.Background()
	all := []string{"n1/c1", "n1/c2", "n1/c3", "n1/c:4", "n2/c1", "n2/c2"}
	tooMany := make([]string, store.MaxContainersPerNode+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("c%d", i)
	}
	for _, tc := range []struct {
		name    string
		holds   []string
		removed []string // service/container
		rows    []string
		invalid bool
	}{
		{"holds all", []string{"c1", "c2", "c3", "c:4"}, nil, all, false},
		{"holds more than it has rows for", []string{"c1", "c2", "c3", "c:4", "new"}, nil, all, false},
		{"one wipe lost", []string{"c1", "c3", "c:4"}, []string{"svc2/c2"}, []string{"n1/c1", "n1/c3", "n1/c:4", "n2/c1", "n2/c2"}, false},
		{"an escaped ID is matched unescaped", []string{"c1", "c2", "c3"}, []string{"svc1/c:4"}, []string{"n1/c1", "n1/c2", "n1/c3", "n2/c1", "n2/c2"}, false},
		{"holds nothing", []string{}, []string{"svc1/c1", "svc1/c3", "svc1/c:4", "svc2/c2"}, []string{"n2/c1", "n2/c2"}, false},
		{"nil is nothing too", nil, []string{"svc1/c1", "svc1/c3", "svc1/c:4", "svc2/c2"}, []string{"n2/c1", "n2/c2"}, false},
		{"over the cap", tooMany, nil, all, true},
		{"an empty ID", []string{"c1", ""}, nil, all, true},
		{"a control character", []string{"c1\x1b[2J"}, nil, all, true},
		{"overlong", []string{strings.Repeat("c", store.MaxNodeReportField+1)}, nil, all, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			for _, n := range []string{"n1", "n2"} {
				rs := []store.ContainerReport{mounted("c1", "svc1", "a@v1"), mounted("c2", "svc2", "b@v1")}
				if n == "n1" {
					rs = append(rs, mounted("c3", "svc1", "a@v1"), mounted("c:4", "svc1", "a@v1"))
				}
				if _, err := s.ApplyContainerReports(ctx, n, rs); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.ReconcileNodeContainers(ctx, "n1", tc.holds)
			if tc.invalid != (err != nil) || err != nil && !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("ReconcileNodeContainers: %v, want invalid %v", err, tc.invalid)
			}
			if g := reconciled(got); !slices.Equal(g, tc.removed) {
				t.Errorf("removed %q, want %q", g, tc.removed)
			}
			if rows := nodeRows(t, s, "svc1", "svc2"); !slices.Equal(rows, tc.rows) {
				t.Errorf("rows %q, want %q", rows, tc.rows)
			}
			// The node's index agrees with its rows: the cap counts what is left.
			var fill []store.ContainerReport
			for i := range store.MaxContainersPerNode - (len(tc.rows) - 2) {
				fill = append(fill, mounted(fmt.Sprintf("f%d", i), "svc3"))
			}
			out, err := s.ApplyContainerReports(ctx, "n1", fill)
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(out, store.ReportOverCap) {
				t.Errorf("after reconciling, the node's index still counts removed rows")
			}
		})
	}
	if _, err := newStore(t).ReconcileNodeContainers(ctx, "n1/x", nil); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("node ID with a slash: %v", err)
	}
}

// More rows than one etcd transaction takes go in several, all of them.
func TestReconcileNodeContainersManyRows(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	var fill []store.ContainerReport
	for i := range 500 {
		fill = append(fill, mounted(fmt.Sprintf("c%03d", i), "svc1", "a@v1"))
	}
	if _, err := s.ApplyContainerReports(ctx, "n1", fill); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReconcileNodeContainers(ctx, "n1", []string{"c007"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 499 {
		t.Errorf("removed %d rows, want 499", len(got))
	}
	if rows := nodeRows(t, s, "svc1"); !slices.Equal(rows, []string{"n1/c007"}) {
		t.Errorf("rows %q, want n1/c007 only", rows)
	}
}

// BenchmarkReconcileNodeContainers: what an inventory costs the manager
// when nothing is to be removed (the common case: the first beat of every
// session, so a reconnect storm pays it once per node), at a node's
// largest table and at a typical one; beside it, as the baseline of the
// same run, a beat's single report (ApplyContainerReports reads the
// node's index too).
func BenchmarkReconcileNodeContainers(b *testing.B) {
	for _, op := range []string{"reconcile", "one-report"} {
		for _, n := range []int{100, store.MaxContainersPerNode} {
			benchmarkNodeTable(b, op, n)
		}
	}
}

func benchmarkNodeTable(b *testing.B, op string, n int) {
	b.Run(fmt.Sprintf("%s/rows=%d", op, n), func(b *testing.B) {
		ctx := context.Background()
		s := newStore(b)
		var fill []store.ContainerReport
		holds := make([]string, n)
		for i := range n {
			holds[i] = fmt.Sprintf("%064x", i)
			fill = append(fill, mounted(holds[i], "svc1", "a@v1"))
		}
		for len(fill) > 0 {
			k := min(len(fill), 50)
			if _, err := s.ApplyContainerReports(ctx, "n1", fill[:k]); err != nil {
				b.Fatal(err)
			}
			fill = fill[k:]
		}
		b.ResetTimer()
		for range b.N {
			if op == "one-report" {
				if _, err := s.ApplyContainerReports(ctx, "n1", []store.ContainerReport{mounted(holds[0], "svc1", "a@v1")}); err != nil {
					b.Fatal(err)
				}
				continue
			}
			if got, err := s.ReconcileNodeContainers(ctx, "n1", holds); err != nil || len(got) != 0 {
				b.Fatalf("removed %d, %v", len(got), err)
			}
		}
	})
}

// FuzzValidateNodeContainerID: a container ID a node names (in a report or
// its inventory) is accepted only as bounded, printable, valid UTF-8 text.
func FuzzValidateNodeContainerID(f *testing.F) {
	f.Add("4f2a91c0be7d")
	f.Add("")
	f.Add("c\x00")
	f.Add("\x1b]0;x\a")
	f.Add(strings.Repeat("c", store.MaxNodeReportField+1))
	f.Fuzz(func(t *testing.T, id string) {
		if store.ValidateNodeContainerID(id) != nil {
			return
		}
		if id == "" || len(id) > store.MaxNodeReportField || !utf8.ValidString(id) || strings.ContainsFunc(id, func(r rune) bool { return !unicode.IsPrint(r) }) {
			t.Fatalf("accepted %q", id)
		}
	})
}
