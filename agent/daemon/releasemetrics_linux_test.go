package daemon

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/lockbox-project/lockbox/agent"
)

type fakeReleases agent.ReleaseCounts

func (f *fakeReleases) ReleaseCounts() agent.ReleaseCounts { return agent.ReleaseCounts(*f) }

// TestReleaseMetrics: each cause is its own series of one counter, read
// from the agent at scrape time.
func TestReleaseMetrics(t *testing.T) {
	f := &fakeReleases{Release: 1, Exit: 2, Reap: 3, Reuse: 4}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(releaseMetrics(f)...)
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
	for cause, want := range map[string]float64{"release": 1, "exit": 2, "reap": 3, "reuse": 4} {
		if got := metric(gather(), "lockbox_agent_releases_total", "cause", cause); got != want {
			t.Errorf("releases{cause=%q} = %v, want %v", cause, got, want)
		}
	}
	f.Exit = 10
	if got := metric(gather(), "lockbox_agent_releases_total", "cause", "exit"); got != 10 {
		t.Errorf("releases{cause=exit} = %v after more exits, want 10", got)
	}
}
