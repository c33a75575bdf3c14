package manager

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/lockbox-project/lockbox/internal/metrics"
)

// adminMetrics counts admin calls by method and gRPC code, on the TCP
// listener and the admin socket alike. It is a small interceptor of our
// own rather than go-grpc-middleware's Prometheus provider: that one
// labels every service of the server (node CA, dispatcher streams, cluster)
// with four labels and per-message counters, and its labels and names
// would be a second vocabulary to document; the admin API needs one
// counter and one histogram.
//
// Methods are the Admin service's (a bounded set: gRPC calls interceptors
// only for registered methods). The request, which may hold secret data,
// is never looked at.
type adminMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newAdminMetrics() *adminMetrics {
	return &adminMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockbox_manager_admin_requests_total",
			Help: "Admin API calls handled, by method and gRPC code (refusals by the authorizer included).",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "lockbox_manager_admin_request_duration_seconds",
			Help: "Time to handle an admin API call, by method.",
			// 0.5 ms to about 4 s.
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"method"}),
	}
}

func (a *adminMetrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	method, ok := strings.CutPrefix(info.FullMethod, adminService)
	if !ok {
		return handler(ctx, req)
	}
	start := time.Now()
	resp, err := handler(ctx, req)
	a.duration.WithLabelValues(method).Observe(time.Since(start).Seconds())
	a.requests.WithLabelValues(method, status.Code(err).String()).Inc()
	return resp, err
}

func (a *adminMetrics) Describe(ch chan<- *prometheus.Desc) {
	a.requests.Describe(ch)
	a.duration.Describe(ch)
}

func (a *adminMetrics) Collect(ch chan<- prometheus.Metric) {
	a.requests.Collect(ch)
	a.duration.Collect(ch)
}

// serveMetrics starts the /metrics listener of --metrics-addr: the admin
// calls, the dispatcher's sessions and fan-outs, and the manager's state.
func (m *Manager) serveMetrics() (*metrics.Server, error) {
	reg := metrics.NewRegistry()
	reg.MustRegister(
		m.adminMetrics,
		m.disp.Collector(),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "lockbox_manager_locked",
			Help: "1 while the manager is locked (autolock) and serves nothing but unlock.",
		}, func() float64 { return boolGauge(m.keys.Locked()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "lockbox_manager_etcd_leader",
			Help: "1 while this manager's embedded etcd member leads the etcd cluster.",
		}, func() float64 { return boolGauge(m.IsEtcdLeader()) }),
	)
	return metrics.Listen(m.cfg.MetricsAddr, reg, m.log)
}

// serveLockedMetrics serves /metrics while the key files are sealed (no
// etcd, no dispatcher yet): the admin calls and lockbox_manager_locked 1,
// so that monitoring sees a manager waiting for its unlock key.
func (m *Manager) serveLockedMetrics() (*metrics.Server, error) {
	reg := metrics.NewRegistry()
	reg.MustRegister(
		m.adminMetrics,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "lockbox_manager_locked",
			Help: "1 while the manager is locked (autolock) and serves nothing but unlock.",
		}, func() float64 { return 1 }),
	)
	return metrics.Listen(m.cfg.MetricsAddr, reg, m.log)
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// MetricsAddr is the address the metrics listener is bound to (after
// Ready), or "" without --metrics-addr.
func (m *Manager) MetricsAddr() string {
	if m.metricsSrv == nil {
		return ""
	}
	return m.metricsSrv.Addr()
}
