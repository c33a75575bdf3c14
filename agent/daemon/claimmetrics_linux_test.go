package daemon

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/lockbox-project/lockbox/agent"
)

type fakeRefusals []agent.RefusedClaim

func (f *fakeRefusals) RefusedClaims() []agent.RefusedClaim { return *f }

// TestClaimsRefusedMetric: lockbox_agent_claims_refused_total has one
// series per refused service, read from the agent at scrape time.
func TestClaimsRefusedMetric(t *testing.T) {
	f := &fakeRefusals{}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(refusedClaims{f})
	gather := func() map[string]*dto.MetricFamily {
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		mfs := map[string]*dto.MetricFamily{}
		for _, mf := range fams {
			mfs[mf.GetName()] = mf
		}
		return mfs
	}
	if mfs := gather(); len(mfs["lockbox_agent_claims_refused_total"].GetMetric()) != 0 {
		t.Fatalf("series before any refusal: %v", mfs)
	}
	*f = fakeRefusals{{Service: "db", Count: 2}, {Service: "web", Count: 1}}
	mfs := gather()
	for svc, want := range map[string]float64{"db": 2, "web": 1} {
		if got := metric(mfs, "lockbox_agent_claims_refused_total", "service", svc); got != want {
			t.Errorf("claims_refused{service=%q} = %v, want %v", svc, got, want)
		}
	}
}
