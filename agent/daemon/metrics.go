package daemon

import (
	"context"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lockbox-project/lockbox/agent"
	"github.com/lockbox-project/lockbox/agent/grants"
	"github.com/lockbox-project/lockbox/agent/localapi"
	"github.com/lockbox-project/lockbox/agent/session"
	"github.com/lockbox-project/lockbox/internal/metrics"
)

// localAPIMetrics is the local API server's Observer: requests by
// operation and result code, and their duration. The local API package
// itself stays free of Prometheus: its client half is linked into
// lockbox-runtime, the binary on the container-start path.
type localAPIMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newLocalAPIMetrics() *localAPIMetrics {
	return &localAPIMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockbox_agent_localapi_requests_total",
			Help: "Local API requests answered, by operation (prepare, release, list, none) and result (OK or the error code).",
		}, []string{"op", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "lockbox_agent_localapi_request_duration_seconds",
			Help: "Time from a local API request read to its answer sent, by operation.",
			// 50 µs to about 1.6 s: a prepare is about 1 ms.
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}, []string{"op"}),
	}
}

func (m *localAPIMetrics) ObserveRequest(op, result string, took time.Duration) {
	m.requests.WithLabelValues(op, result).Inc()
	m.duration.WithLabelValues(op).Observe(took.Seconds())
}

// serveMetrics starts the /metrics listener of --metrics-addr. Every
// value is read at scrape time from the pieces that hold it; none names a
// container or a secret.
func serveMetrics(addr string, sess *session.Session, cache *grants.Cache, core localapi.Handler, api *localAPIMetrics, o Options, extra ...prometheus.Collector) (*metrics.Server, error) {
	reg := metrics.NewRegistry()
	reg.MustRegister(extra...)
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(
		api.requests, api.duration,
		gauge("lockbox_agent_session_connected",
			"1 while the agent holds a session stream with a manager.",
			func() float64 { return boolGauge(sess.Connected()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "lockbox_agent_session_reconnects_total",
			Help: "Sessions with a manager that came up after the agent's first one.",
		}, func() float64 { return float64(sess.Reconnects()) }),
		gauge("lockbox_agent_applied_revision",
			"Cluster revision of the last session message the agent applied (0: none yet).",
			func() float64 { return float64(cache.Revision()) }),
		gauge("lockbox_agent_services",
			"Services placed on this node whose grants the agent holds.",
			func() float64 { s, _ := cache.Counts(); return float64(s) }),
		gauge("lockbox_agent_secrets",
			"Secrets the agent holds in locked memory.",
			func() float64 { _, s := cache.Counts(); return float64(s) }),
		gauge("lockbox_agent_grants",
			"Grants the agent holds: secret references of the services placed on this node.",
			func() float64 { return float64(grantCount(cache)) }),
		gauge("lockbox_agent_containers",
			"Containers the agent holds a secrets mount for.",
			func() float64 { return containerCount(core) }),
	)
	if rc, ok := core.(releaseCounter); ok {
		reg.MustRegister(releaseMetrics(rc)...)
	}
	if rc, ok := core.(refusalCounter); ok {
		reg.MustRegister(refusedClaims{rc})
	}
	return metrics.Listen(addr, reg, o.Log.With("part", "metrics"))
}

// releaseCounter is the agent's count of released containers by cause.
type releaseCounter interface{ ReleaseCounts() agent.ReleaseCounts }

// releaseMetrics is lockbox_agent_releases_total, one series per cause.
// Exits should carry nearly all of them: a reap means a container's
// secrets outlived it until the reaper came by.
func releaseMetrics(rc releaseCounter) []prometheus.Collector {
	const name, help = "lockbox_agent_releases_total", "Containers whose secrets the agent wiped, by cause: exit (its process exited), release (an adapter's release), reap (found ended by the periodic reap), reuse (its ID was prepared again after it ended)."
	causes := []struct {
		cause string
		n     func(agent.ReleaseCounts) uint64
	}{
		{"exit", func(c agent.ReleaseCounts) uint64 { return c.Exit }},
		{"release", func(c agent.ReleaseCounts) uint64 { return c.Release }},
		{"reap", func(c agent.ReleaseCounts) uint64 { return c.Reap }},
		{"reuse", func(c agent.ReleaseCounts) uint64 { return c.Reuse }},
	}
	out := make([]prometheus.Collector, 0, len(causes))
	for _, c := range causes {
		out = append(out, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: name, Help: help, ConstLabels: prometheus.Labels{"cause": c.cause},
		}, func() float64 { return float64(c.n(rc.ReleaseCounts())) }))
	}
	return out
}

// refusalCounter is the agent's count of refused claims by service.
type refusalCounter interface{ RefusedClaims() []agent.RefusedClaim }

var _ refusalCounter = (*agent.Agent)(nil)

// refusedClaimsDesc is lockbox_agent_claims_refused_total: the service
// label is bounded by the services ever placed on the node (a claim of
// another is not granted, not refused).
var refusedClaimsDesc = prometheus.NewDesc("lockbox_agent_claims_refused_total",
	"Claims the claimed service's claim rules (or the secure default for Kubernetes pods) refused, by service.",
	[]string{"service"}, nil)

// refusedClaims reads the agent's refusals at scrape time.
type refusedClaims struct{ rc refusalCounter }

func (r refusedClaims) Describe(ch chan<- *prometheus.Desc) { ch <- refusedClaimsDesc }

func (r refusedClaims) Collect(ch chan<- prometheus.Metric) {
	for _, c := range r.rc.RefusedClaims() {
		ch <- prometheus.MustNewConstMetric(refusedClaimsDesc, prometheus.CounterValue, float64(c.Count), c.Service)
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func grantCount(cache *grants.Cache) int {
	n := 0
	for _, name := range cache.ServiceNames() {
		// A service that left between the two calls counts nothing.
		if r, err := cache.Restrict(name); err == nil {
			n += len(r.Grants())
		}
	}
	return n
}

// containerCount asks the handler, as `lockbox agent ls` would; NaN if it
// cannot answer.
func containerCount(h localapi.Handler) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := h.List(ctx)
	if err != nil {
		return math.NaN()
	}
	return float64(len(resp.GetContainers()))
}
