package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/admin"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{in: "10m", want: now.Add(-10 * time.Minute)},
		{in: "24h", want: now.Add(-24 * time.Hour)},
		{in: "2026-01-02T15:04:05Z", want: time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)},
		{in: "2026-01-02T15:04:05.5+01:00", want: time.Date(2026, 1, 2, 14, 4, 5, 5e8, time.UTC)},
		{in: "2026-01-02", want: time.Date(2026, 1, 2, 0, 0, 0, 0, time.Local)},
		{in: "1767366245", want: time.Unix(1767366245, 0)},
		{in: "-5m", bad: true},
		{in: "yesterday", bad: true},
	} {
		got, err := parseSince(c.in, now)
		if c.bad {
			if err == nil || !strings.Contains(err.Error(), "--since") {
				t.Errorf("parseSince(%q) = %v, %v; want an error naming --since", c.in, got, err)
			}
			continue
		}
		if err != nil || !got.Equal(c.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

// audit ls shows who changed what (the root socket here), filters by
// --since, and never prints secret data.
func TestCLIAuditLs(t *testing.T) {
	e := newCLIEnv(t, "")
	marker := "CLI-AUDIT-MARKER-93ab17"
	e.mustRun(t, marker, "secret", "create", "db_pw", "-")
	e.mustRun(t, "", "service", "create", "--secret", "db_pw", "web")
	e.mustRun(t, "", "service", "rm", "web")
	e.mustRun(t, "", "secret", "rm", "db_pw")

	out := e.mustRun(t, "", "audit", "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "TIME") || !strings.Contains(lines[0], "ACTOR") || !strings.Contains(lines[0], "ACTION") {
		t.Fatalf("audit ls:\n%s", out)
	}
	for i, want := range []string{"secret.create   secret db_pw", "service.create   service web", "service.remove   service web", "secret.remove    secret db_pw"} {
		f := strings.Fields(want)
		if !strings.Contains(lines[i+1], "local root") || !strings.Contains(lines[i+1], f[0]) || !strings.Contains(lines[i+1], f[1]+" "+f[2]) {
			t.Errorf("line %d = %q, want local root %s", i+1, lines[i+1], want)
		}
	}
	if strings.Contains(out, marker) {
		t.Fatal("audit ls printed secret data")
	}
	if out := e.mustRun(t, "", "audit", "ls", "--since", "1h", "-q"); strings.Count(out, "\n") != 4 {
		t.Fatalf("audit ls --since 1h -q:\n%s", out)
	}
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if out := e.mustRun(t, "", "audit", "ls", "--since", future, "-q"); out != "" {
		t.Fatalf("audit ls --since %s:\n%s", future, out)
	}
	out = e.mustRun(t, "", "audit", "ls", "--format", "json")
	var row map[string]any
	if err := json.Unmarshal([]byte(strings.Split(out, "\n")[0]), &row); err != nil || row["Action"] != "secret.create" || row["Actor"] != "local root" || row["Object"] != "db_pw" {
		t.Fatalf("audit ls --format json: %v\n%s", err, out)
	}
	if _, err := e.run(t, "", "audit", "ls", "--since", "yesterday"); err == nil || !strings.Contains(err.Error(), "--since") {
		t.Fatalf("a bad --since: %v", err)
	}
}

// fakeLive is a dispatcher's live status of one node.
type fakeLive map[string]*types.NodeLiveStatus

func (f fakeLive) LiveNode(id string) *types.NodeLiveStatus {
	if st := f[id]; st != nil {
		return &types.NodeLiveStatus{Session: st.Session, LastHeartbeat: st.LastHeartbeat, GrantsHeld: st.GrantsHeld, GrantsKnown: st.GrantsKnown}
	}
	return nil
}

// node ls has docker's columns (AVAILABILITY aside) plus the grants held;
// the last heartbeat is in inspect.
func TestCLINodeLsColumns(t *testing.T) {
	ctx := context.Background()
	beat := time.Date(2026, 12, 5, 1, 2, 3, 0, time.UTC)
	live := fakeLive{}
	e := newCLIEnv(t, "", func(c *admin.Config) { c.Live = live })
	w, err := e.store.CreateNode(ctx, &types.Node{Role: types.NodeRole_NODE_ROLE_WORKER, State: types.NodeState_NODE_STATE_READY,
		Description: &types.NodeDescription{Hostname: "w1", AgentVersion: "v1.2.3"}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.store.CreateNode(ctx, &types.Node{Role: types.NodeRole_NODE_ROLE_MANAGER, Description: &types.NodeDescription{Hostname: "m1"}})
	if err != nil {
		t.Fatal(err)
	}
	live[w.Id] = &types.NodeLiveStatus{Session: true, LastHeartbeat: timestamppb.New(beat), GrantsHeld: 3, GrantsKnown: true}
	// CreateNode leaves the state to the dispatcher: mark the worker ready.
	if _, err := e.store.UpdateNode(ctx, w.Id, func(n *types.Node) error { n.State = types.NodeState_NODE_STATE_READY; return nil }); err != nil {
		t.Fatal(err)
	}

	out := e.mustRun(t, "", "node", "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("node ls:\n%s", out)
	}
	if h := strings.Join(strings.Fields(lines[0]), " "); h != "ID HOSTNAME STATUS MANAGER STATUS AGENT VERSION GRANTS" {
		t.Fatalf("header %q", h)
	}
	if f := strings.Fields(lines[1]); len(f) != 5 || f[1] != "m1" || f[2] != "Unknown" || f[3] != "Unreachable" || f[4] != "-" {
		t.Errorf("manager row %q, want m1 Unknown Unreachable (no agent version) -", lines[1])
	}
	if f := strings.Fields(lines[2]); len(f) != 5 || f[1] != "w1" || f[2] != "Ready" || f[3] != "v1.2.3" || f[4] != "3" {
		t.Errorf("worker row %q, want w1 Ready (no manager status) v1.2.3 3", lines[2])
	}
	// A running manager (its registration live) is Reachable.
	if err := e.store.RegisterManager(ctx, m.Id, "10.0.0.1:4243", 60); err != nil {
		t.Fatal(err)
	}
	if out := e.mustRun(t, "", "node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}"); out != "m1 Reachable\nw1 \n" {
		t.Fatalf("node ls with a running manager: %q", out)
	}
	if out := e.mustRun(t, "", "node", "inspect", "--format", "{{.Status.LastHeartbeat.UTC}} {{.Status.Grants}} {{.Description.AgentVersion}}", "w1"); strings.TrimSpace(out) != beat.String()+" 3 v1.2.3" {
		t.Fatalf("node inspect: %q", out)
	}
}
