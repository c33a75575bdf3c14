package dispatcher

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestCloseReason(t *testing.T) {
	for _, tc := range []struct {
		err, ctxErr error
		want        string
	}{
		{ErrNodeRemoved, nil, reasonNodeRemoved},
		{ErrRevoked, nil, reasonRevoked},
		{context.Canceled, context.Canceled, reasonDisconnected},
		{errors.New("write: broken pipe"), context.Canceled, reasonDisconnected},
		{status.Error(codes.Aborted, "replaced"), nil, reasonReplaced},
		{status.Error(codes.ResourceExhausted, "behind"), nil, reasonFellBehind},
		{status.Error(codes.Unavailable, "data"), nil, reasonUnavailable},
		{errors.New("something else"), nil, reasonOther},
	} {
		if got := closeReason(tc.err, tc.ctxErr); got != tc.want {
			t.Errorf("closeReason(%v, %v) = %q, want %q", tc.err, tc.ctxErr, got, tc.want)
		}
	}
}

// sample reads one sample of the dispatcher's collector.
// settled samples a metric until it reads want or a few seconds pass, and
// returns the last reading. The dispatcher counts a message or a fan-out
// after handing it on, so a test that has just received it may read the
// metric a moment early.
func settled(t *testing.T, d *Dispatcher, want float64, name string, labels ...string) float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := sample(t, d, name, labels...)
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sample(t *testing.T, d *Dispatcher, name string, labels ...string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(d.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
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
	}
	return 0
}

func TestMetricsMove(t *testing.T) {
	h := newHarness(t)
	a := h.node("a", nil)
	b := h.node("b", map[string]string{"zone": "b"})
	sec := h.secret("pw", "hunter2")
	svc := h.service("web", nil, sec)
	h.sync()
	d := h.d

	if got := settled(t, d, 1, "lockbox_manager_services"); got != 1 {
		t.Errorf("services = %v, want 1", got)
	}
	if got := settled(t, d, 2, "lockbox_manager_nodes", "role", "worker", "state", "unknown"); got != 2 {
		t.Errorf("worker nodes in state unknown = %v, want 2", got)
	}
	if got := settled(t, d, 0, "lockbox_manager_sessions"); got != 0 {
		t.Errorf("sessions = %v before any connects", got)
	}

	ca := h.connect(a, 0)
	ca.next()
	cb := h.connect(b, 0)
	cb.next()
	if got := settled(t, d, 2, "lockbox_manager_sessions"); got != 2 {
		t.Errorf("sessions = %v, want 2", got)
	}
	if got := settled(t, d, 2, "lockbox_manager_session_messages_sent_total", "type", "complete"); got != 2 {
		t.Errorf("complete messages = %v, want 2", got)
	}
	// Each COMPLETE carried the service and its secret.
	if got := settled(t, d, 4, "lockbox_manager_changes_sent_total"); got != 4 {
		t.Errorf("changes sent = %v, want 4", got)
	}

	fanOuts := sample(t, d, "lockbox_manager_fanout_duration_seconds")
	sp := spec("web", []string{"node.labels.zone==b"}, sec)
	if _, err := h.st.UpdateService(h.ctx, svc.Id, svc.Meta.Version, sp); err != nil {
		t.Fatal(err)
	}
	ca.next() // web leaves a
	cb.next() // web's new placement reaches b
	if got := settled(t, d, fanOuts+1, "lockbox_manager_fanout_duration_seconds"); got != fanOuts+1 {
		t.Errorf("fan-outs observed = %v, want %v", got, fanOuts+1)
	}
	if got := settled(t, d, 2, "lockbox_manager_session_messages_sent_total", "type", "incremental"); got != 2 {
		t.Errorf("incremental messages = %v, want 2", got)
	}

	// A replaced session, then a disconnected one.
	ca2 := h.connect(a, 0)
	ca2.next()
	if err := <-ca.errc; status.Code(err) != codes.Aborted {
		t.Fatalf("replaced session ended with %v", err)
	}
	cb.stop()
	<-cb.errc
	if got := settled(t, d, 1, "lockbox_manager_sessions"); got != 1 {
		t.Errorf("sessions = %v, want 1", got)
	}
	for reason, want := range map[string]float64{reasonReplaced: 1, reasonDisconnected: 1, reasonRevoked: 0} {
		if got := settled(t, d, want, "lockbox_manager_sessions_closed_total", "reason", reason); got != want {
			t.Errorf("sessions closed (%s) = %v, want %v", reason, got, want)
		}
	}
	d.EndSession(a, ErrRevoked)
	<-ca2.errc
	if got := settled(t, d, 1, "lockbox_manager_sessions_closed_total", "reason", reasonRevoked); got != 1 {
		t.Errorf("sessions closed (revoked) = %v, want 1", got)
	}
	if got := settled(t, d, 0, "lockbox_manager_sessions"); got != 0 {
		t.Errorf("sessions = %v, want 0", got)
	}
}

// The collector passes the registry's consistency checks and names
// nothing per node, service or secret.
func TestMetricsLint(t *testing.T) {
	h := newHarness(t)
	h.node("a", nil)
	h.sync()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h.d.Collector())
	// The pedantic registry checks every metric against its description.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if n := lp.GetName(); !strings.Contains(" type reason role state ", " "+n+" ") {
					t.Errorf("%s has label %q", mf.GetName(), n)
				}
			}
		}
	}
}
