package daemon

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestLiveUpdateMetrics: tries count by service and result; only applied
// ones are timed.
func TestLiveUpdateMetrics(t *testing.T) {
	m := newLiveUpdateMetrics()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.collectors()...)
	m.ObserveLiveUpdate("web", true, 3*time.Millisecond)
	m.ObserveLiveUpdate("web", true, 5*time.Millisecond)
	m.ObserveLiveUpdate("web", false, 0)
	m.ObserveLiveUpdate("db", false, 0)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	var timed uint64
	for _, mf := range fams {
		for _, mt := range mf.GetMetric() {
			switch mf.GetName() {
			case "lockbox_agent_live_updates_total":
				key := ""
				for _, l := range mt.GetLabel() {
					key += l.GetName() + "=" + l.GetValue() + " "
				}
				got[key] = mt.GetCounter().GetValue()
			case "lockbox_agent_live_update_apply_seconds":
				timed = mt.GetHistogram().GetSampleCount()
			}
		}
	}
	want := map[string]float64{"result=applied service=web ": 2, "result=failed service=web ": 1, "result=failed service=db ": 1}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s= %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	if timed != 2 {
		t.Errorf("histogram holds %d samples, want 2", timed)
	}
}
