//go:build linux

package manager

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
)

// scrape reads addr's /metrics as a client would.
func scrape(t testing.TB, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// value is the sample of name whose labels include the given pairs: a
// gauge's or counter's value, or a histogram's count. Absent is 0.
func value(mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	mf := mfs[name]
	if mf == nil {
		return 0
	}
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			ok := false
			for _, lp := range m.GetLabel() {
				ok = ok || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
			}
			if !ok {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return 0
}

// waitMetricAbove scrapes until name (with labels) is above floor: what
// is counted after it was handed on shows a moment after the node got it.
func waitMetricAbove(t testing.TB, addr string, floor float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		got := value(scrape(t, addr), name, labels...)
		if got > floor {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v after 20s, want more than %v", name, labels, got, floor)
		}
		<-tick.C
	}
}

// waitMetric scrapes until name (with labels) has the value want: a
// session that ends on the node's side ends on the manager's a moment
// later.
func waitMetric(t testing.TB, addr string, want float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		got := value(scrape(t, addr), name, labels...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v after 20s, want %v", name, labels, got, want)
		}
		<-tick.C
	}
}

func TestMetricsEndpoint(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "127.0.0.1")
	cfg.MetricsAddr = "127.0.0.1:0"
	m := startManager(t, cfg)
	addr := m.MetricsAddr()
	if addr == "" {
		t.Fatal("no metrics address with --metrics-addr")
	}
	adm := m.admin()

	mfs := scrape(t, addr)
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "lockbox_manager_sessions", "lockbox_manager_locked", "lockbox_manager_etcd_leader"} {
		if mfs[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	if got := value(mfs, "lockbox_manager_etcd_leader"); got != 1 {
		t.Errorf("etcd leader = %v for the only member", got)
	}
	if got := value(mfs, "lockbox_manager_sessions"); got != 0 {
		t.Errorf("sessions = %v before any node", got)
	}

	sec := createSecret(t, adm, "db_pw", "hunter2")
	svc := createService(t, adm, "web", nil, sec)
	if _, err := adm.GetSecret(ctx, &adminapi.GetSecretRequest{NameOrId: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("get of a missing secret: %v", err)
	}
	n := joinNode(t, m.Addr(), token(t, adm, types.NodeRole_NODE_ROLE_WORKER, false), "n1")
	s := n.session(t, m.Addr(), 0)
	if first := s.next(); first.Type != dapi.SessionMessage_COMPLETE {
		t.Fatalf("first message %v", first.Type)
	}

	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"lockbox_manager_sessions", nil, 1},
		{"lockbox_manager_session_messages_sent_total", []string{"type", "complete"}, 1},
		{"lockbox_manager_admin_requests_total", []string{"method", "CreateSecret", "code", "OK"}, 1},
		{"lockbox_manager_admin_requests_total", []string{"method", "GetSecret", "code", "NotFound"}, 1},
		{"lockbox_manager_admin_request_duration_seconds", []string{"method", "CreateService"}, 1},
		{"lockbox_manager_services", nil, 1},
		{"lockbox_manager_nodes", []string{"role", "worker", "state", "ready"}, 1},
		{"lockbox_manager_nodes", []string{"role", "manager", "state", "ready"}, 1},
	} {
		// Some are counted a moment after the node has what they count
		// (a message after it was handed on, a node's state after its
		// session opened): wait for each.
		waitMetric(t, addr, tc.want, tc.name, tc.labels...)
	}
	mfs = scrape(t, addr)
	fanOuts := value(mfs, "lockbox_manager_fanout_duration_seconds")
	changes := value(mfs, "lockbox_manager_changes_sent_total")

	// A service update reaches the node: one more fan-out observed, its
	// change counted.
	sp := svc.Spec
	sp.Labels = map[string]string{"round": "1"}
	u, err := adm.UpdateService(ctx, &adminapi.UpdateServiceRequest{NameOrId: svc.Id, Version: svc.Meta.Version, Spec: sp})
	if err != nil {
		t.Fatal(err)
	}
	s.until(func(msg *dapi.SessionMessage) bool {
		return msg.Revision >= u.Service.Meta.Version && len(msg.Changes) > 0
	})
	// Counted after the change is handed to the streams: wait for it.
	waitMetricAbove(t, addr, fanOuts, "lockbox_manager_fanout_duration_seconds")
	waitMetricAbove(t, addr, changes, "lockbox_manager_changes_sent_total")

	// The node goes away: the session is gone, closed as disconnected.
	s.cancel()
	waitMetric(t, addr, 0, "lockbox_manager_sessions")
	if got := value(scrape(t, addr), "lockbox_manager_sessions_closed_total", "reason", "disconnected"); got != 1 {
		t.Errorf("sessions closed as disconnected = %v, want 1", got)
	}

	// The listener stops with the manager.
	m.stop()
	if _, err := http.Get(fmt.Sprintf("http://%s/metrics", addr)); err == nil {
		t.Error("metrics still served after the manager stopped")
	}
}
