package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
	"github.com/lockbox-project/lockbox/manager/store"
)

func mounted(cid, svc string, secrets ...string) store.ContainerReport {
	r := store.ContainerReport{ContainerID: cid, ServiceID: svc, State: store.ContainerMounted}
	for _, s := range secrets {
		name, id, _ := strings.Cut(s, "@")
		r.Secrets = append(r.Secrets, store.ContainerSecret{Name: name, ID: id})
	}
	return r
}

func wiped(cid, svc string) store.ContainerReport {
	return store.ContainerReport{ContainerID: cid, ServiceID: svc, Wiped: true}
}

// rowsOf is the service's rows as "node/container state secrets error".
func rowsOf(t *testing.T, s *store.Store, svc string) []string {
	t.Helper()
	rows, next, err := s.ListServiceContainers(context.Background(), svc, "", 0)
	if err != nil || next != "" {
		t.Fatalf("ListServiceContainers(%s) = %v, %q", svc, err, next)
	}
	var out []string
	for _, r := range rows {
		var sec []string
		for _, x := range r.Secrets {
			sec = append(sec, x.Name+"@"+x.ID)
		}
		out = append(out, fmt.Sprintf("%s/%s %s %s %s", r.NodeID, r.ContainerID, r.State, strings.Join(sec, ","), r.Error))
	}
	return out
}

func TestContainerReports(t *testing.T) {
	ctx := context.Background()
	fail := store.ContainerReport{ContainerID: "c1", ServiceID: "svc1", State: store.ContainerUpdateFailed, Error: "target busy"}
	updated := mounted("c1", "svc1", "a@v2")
	updated.State = store.ContainerUpdated
	for _, tc := range []struct {
		name    string
		reports []store.ContainerReport
		want    []store.ReportOutcome
		rows    []string // of svc1
	}{
		{"mount", []store.ContainerReport{mounted("c1", "svc1", "a@v1", "b@")}, []store.ReportOutcome{store.ReportApplied},
			[]string{"n1/c1 mounted a@v1,b@ "}},
		{"update then failed update keeps the files it has", []store.ContainerReport{mounted("c1", "svc1", "a@v1"), updated, fail},
			[]store.ReportOutcome{store.ReportApplied, store.ReportApplied, store.ReportApplied},
			[]string{"n1/c1 update-failed a@v2 target busy"}},
		{"a good update clears the error", []store.ContainerReport{fail, updated}, []store.ReportOutcome{store.ReportApplied, store.ReportApplied},
			[]string{"n1/c1 updated a@v2 "}},
		{"wipe removes the row", []store.ContainerReport{mounted("c1", "svc1", "a@v1"), wiped("c1", "svc1")},
			[]store.ReportOutcome{store.ReportApplied, store.ReportApplied}, nil},
		{"wipe without a row", []store.ContainerReport{wiped("c9", "")}, []store.ReportOutcome{store.ReportNoRow}, nil},
		{"a restarted container ID is mounted again", []store.ContainerReport{mounted("c1", "svc1", "a@v1"), wiped("c1", ""), mounted("c1", "svc1", "a@v3")},
			[]store.ReportOutcome{store.ReportApplied, store.ReportApplied, store.ReportApplied}, []string{"n1/c1 mounted a@v3 "}},
		{"IDs with slashes stay in the node's rows", []store.ContainerReport{mounted("../../n2/x", "svc1", "a@v1")}, []store.ReportOutcome{store.ReportApplied},
			[]string{"n1/../../n2/x mounted a@v1 "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			got, err := s.ApplyContainerReports(ctx, "n1", tc.reports)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("outcomes = %v, want %v", got, tc.want)
			}
			if rows := rowsOf(t, s, "svc1"); !slices.Equal(rows, tc.rows) {
				t.Errorf("rows = %q, want %q", rows, tc.rows)
			}
		})
	}
}

// A row keeps the manager's time of the first report as its mount time and
// moves its update time with each report.
func TestContainerReportTimes(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	now := time.Date(2026, 12, 5, 4, 0, 0, 0, time.UTC)
	s := store.New(srv.Client(), &xorSealer{}, store.WithClock(func() time.Time { return now }))
	if _, err := s.ApplyContainerReports(ctx, "n1", []store.ContainerReport{mounted("c1", "svc1", "a@v1")}); err != nil {
		t.Fatal(err)
	}
	first := now
	now = now.Add(time.Minute)
	r := mounted("c1", "svc1", "a@v2")
	r.State = store.ContainerUpdated
	if _, err := s.ApplyContainerReports(ctx, "n1", []store.ContainerReport{r}); err != nil {
		t.Fatal(err)
	}
	rows, _, err := s.ListServiceContainers(ctx, "svc1", "", 0)
	if err != nil || len(rows) != 1 {
		t.Fatalf("rows = %v, %v", rows, err)
	}
	if !rows[0].Mounted.Equal(first) || !rows[0].Updated.Equal(now) {
		t.Errorf("mounted %v updated %v, want %v and %v", rows[0].Mounted, rows[0].Updated, first, now)
	}
}

// A node's reports reach only its own rows: another node's wipe of the same
// container ID, or a mount under the same ID, leaves them as they are.
func TestContainerReportsStayOnTheirNode(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if _, err := s.ApplyContainerReports(ctx, "n1", []store.ContainerReport{mounted("c1", "svc1", "a@v1")}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ApplyContainerReports(ctx, "n2", []store.ContainerReport{wiped("c1", "svc1"), mounted("c1", "svc1", "a@forged")})
	if err != nil {
		t.Fatal(err)
	}
	if want := []store.ReportOutcome{store.ReportNoRow, store.ReportApplied}; !slices.Equal(got, want) {
		t.Errorf("outcomes = %v, want %v", got, want)
	}
	if rows, want := rowsOf(t, s, "svc1"), []string{"n1/c1 mounted a@v1 ", "n2/c1 mounted a@forged "}; !slices.Equal(rows, want) {
		t.Errorf("rows = %q, want %q", rows, want)
	}
}

func TestContainerRowsGoWithServiceAndNode(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if _, err := s.CreateSecret(ctx, secretSpec("a"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	svc, err := s.CreateService(ctx, &types.ServiceSpec{Name: "web", Secrets: []*types.SecretReference{{SecretName: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1", "n2"} {
		if _, err := s.ApplyContainerReports(ctx, n, []store.ContainerReport{mounted("c1", svc.Id, "a@v1"), mounted("c2", "other", "a@v1")}); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := s.RemoveNodeContainers(ctx, "n1")
	if err != nil || removed != 2 {
		t.Fatalf("RemoveNodeContainers = %d, %v; want 2", removed, err)
	}
	if rows, want := rowsOf(t, s, svc.Id), []string{"n2/c1 mounted a@v1 "}; !slices.Equal(rows, want) {
		t.Errorf("after node removal: rows = %q, want %q", rows, want)
	}
	if rows := rowsOf(t, s, "other"); len(rows) != 1 {
		t.Errorf("after node removal: other's rows = %q, want n2's only", rows)
	}
	if err := s.RemoveService(ctx, svc.Id); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Client().Get(ctx, s.Prefix()+"containers/"+svc.Id+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Errorf("after service removal: %d rows left (%v)", resp.Count, err)
	}
}

// A node cannot grow the table past MaxContainersPerNode: new containers
// beyond it are refused, held ones still change, and a wipe frees a place.
func TestContainerRowsCapPerNode(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	var fill []store.ContainerReport
	for i := range store.MaxContainersPerNode {
		fill = append(fill, mounted(fmt.Sprintf("c%d", i), "svc1", "a@v1"))
	}
	if _, err := s.ApplyContainerReports(ctx, "n1", fill); err != nil {
		t.Fatal(err)
	}
	update := mounted("c0", "svc1", "a@v2")
	update.State = store.ContainerUpdated
	got, err := s.ApplyContainerReports(ctx, "n1", []store.ContainerReport{mounted("extra", "svc1", "a@v1"), update, wiped("c1", ""), mounted("extra", "svc1", "a@v1")})
	if err != nil {
		t.Fatal(err)
	}
	want := []store.ReportOutcome{store.ReportOverCap, store.ReportApplied, store.ReportApplied, store.ReportApplied}
	if !slices.Equal(got, want) {
		t.Errorf("outcomes = %v, want %v", got, want)
	}
	// Another node has its own allowance.
	if got, err := s.ApplyContainerReports(ctx, "n2", []store.ContainerReport{mounted("extra", "svc1", "a@v1")}); err != nil || got[0] != store.ReportApplied {
		t.Errorf("n2: %v, %v", got, err)
	}
	var total int
	for next := ""; ; {
		rows, n, err := s.ListServiceContainers(ctx, "svc1", next, 500)
		if err != nil {
			t.Fatal(err)
		}
		total += len(rows)
		if next = n; next == "" {
			break
		}
	}
	if total != store.MaxContainersPerNode+1 {
		t.Errorf("paged through %d rows, want %d", total, store.MaxContainersPerNode+1)
	}
}

func TestContainerReportsRefuseBadInput(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	for _, tc := range []struct {
		node string
		r    store.ContainerReport
	}{
		{"n1", store.ContainerReport{ServiceID: "svc1", State: store.ContainerMounted}},
		{"n1", store.ContainerReport{ContainerID: "c1", State: store.ContainerMounted}},
		{"n1", store.ContainerReport{ContainerID: "c1", ServiceID: "a/b", State: store.ContainerMounted}},
		{"n1/x", mounted("c1", "svc1")},
	} {
		if _, err := s.ApplyContainerReports(ctx, tc.node, []store.ContainerReport{tc.r}); err == nil {
			t.Errorf("ApplyContainerReports(%q, %+v) succeeded", tc.node, tc.r)
		}
	}
	if err := store.ValidateContainerUpdate([]string{"a/b"}, ""); err == nil {
		t.Error("a secret ID with a slash was accepted")
	}
	if err := store.ValidateContainerUpdate(nil, strings.Repeat("x", store.MaxContainerError+1)); err == nil {
		t.Error("an overlong error was accepted")
	}
	if err := store.ValidateContainerUpdate(nil, "bad\x1b[31m"); err == nil {
		t.Error("an error with a control character was accepted")
	}
}

// FuzzValidateContainerUpdate: whatever is accepted is bounded printable
// text, and no accepted secret ID can reach another key.
func FuzzValidateContainerUpdate(f *testing.F) {
	f.Add("nfhlvlrrslchsdbu3m3a07a3b", "rename: device busy")
	f.Add("a/b", "")
	f.Add("", "\x1b[2J")
	f.Fuzz(func(t *testing.T, id, errText string) {
		if store.ValidateContainerUpdate([]string{id}, errText) != nil {
			return
		}
		if strings.ContainsAny(id, "/\x00") || len(errText) > store.MaxContainerError || strings.ContainsFunc(errText+id, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("accepted id %q, error %q", id, errText)
		}
	})
}
