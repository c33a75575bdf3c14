package daemon

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lockbox-project/lockbox/agent"
)

// liveUpdateMetrics is the agent's agent.LiveUpdateObserver: live updates
// tried, by service and result, and how long after the grant change was
// seen each applied. Service names are bounded by the services ever placed
// on the node; no container or secret is named.
type liveUpdateMetrics struct {
	total   *prometheus.CounterVec
	latency prometheus.Histogram
}

var _ agent.LiveUpdateObserver = (*liveUpdateMetrics)(nil)

func newLiveUpdateMetrics() *liveUpdateMetrics {
	return &liveUpdateMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockbox_agent_live_updates_total",
			Help: "Live updates of a running container's secret files tried, by service and result (applied, failed). A failed one is retried with backoff; each try counts.",
		}, []string{"service", "result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lockbox_agent_live_update_apply_seconds",
			Help: "Time from the agent applying a grant change to a running container's files being changed (applied live updates only).",
			// 100 µs to about 6.5 s.
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 17),
		}),
	}
}

func (m *liveUpdateMetrics) ObserveLiveUpdate(service string, ok bool, took time.Duration) {
	if !ok {
		m.total.WithLabelValues(service, "failed").Inc()
		return
	}
	m.total.WithLabelValues(service, "applied").Inc()
	m.latency.Observe(took.Seconds())
}

func (m *liveUpdateMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.total, m.latency}
}
