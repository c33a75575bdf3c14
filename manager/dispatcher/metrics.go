package dispatcher

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
)

// metrics are the dispatcher's counters. They are always kept (an atomic
// add per message); Collector exposes them to a registry. No label names
// a node, a service or a secret: their number is unbounded.
type metrics struct {
	changesSent prometheus.Counter
	// messagesSent by message type, resolved once: the send path does no
	// label lookup.
	completeSent, incrementalSent prometheus.Counter
	messagesSent                  *prometheus.CounterVec
	fanOut                        prometheus.Histogram
	closed                        *prometheus.CounterVec
	// reportsDropped counts mount reports not recorded, by reason
	// (reports.go).
	reportsDropped *prometheus.CounterVec
	// rowsReconciled counts container rows removed because their node's
	// inventory no longer lists them (inventory.go).
	rowsReconciled prometheus.Counter

	sessions, services, nodes *prometheus.Desc
}

// Reasons a session ends, the values of the reason label.
const (
	reasonDisconnected = "disconnected" // the node went away (or the manager is stopping)
	reasonSendFailed   = "send_failed"  // writing to the stream failed
	reasonReplaced     = "replaced"     // a newer session of the node took over
	reasonNodeRemoved  = "node_removed"
	reasonRevoked      = "revoked"
	reasonFellBehind   = "fell_behind" // maxPending reached
	reasonUnavailable  = "unavailable" // the data of a change could not be read
	reasonOther        = "other"
)

var closeReasons = []string{reasonDisconnected, reasonSendFailed, reasonReplaced, reasonNodeRemoved, reasonRevoked, reasonFellBehind, reasonUnavailable, reasonOther}

func newMetrics() *metrics {
	m := &metrics{
		changesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lockbox_manager_changes_sent_total",
			Help: "Assignment changes written to node session streams, first messages included.",
		}),
		messagesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockbox_manager_session_messages_sent_total",
			Help: "Messages written to node session streams, by type (complete, incremental).",
		}, []string{"type"}),
		fanOut: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lockbox_manager_fanout_duration_seconds",
			Help: "Time from the dispatcher receiving an etcd watch event to the changes it causes being queued on every affected session.",
			// 0.5 ms to about 8 s.
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 15),
		}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockbox_manager_sessions_closed_total",
			Help: "Node sessions that ended, by reason.",
		}, []string{"reason"}),
		reportsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockbox_manager_mount_reports_dropped_total",
			Help: "Agents' mount reports not kept, by reason: not_placed (the report names a service not placed on the node; nothing recorded), over_cap (the node holds the most container rows it may; audited, not listed by service ps).",
		}, []string{"reason"}),
		rowsReconciled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lockbox_manager_container_rows_reconciled_total",
			Help: "Container rows (service ps) removed because their node's inventory no longer lists the container: its wipe report was lost.",
		}),
		sessions: prometheus.NewDesc("lockbox_manager_sessions",
			"Node sessions connected to this manager.", nil, nil),
		services: prometheus.NewDesc("lockbox_manager_services",
			"Services in the cluster, as this manager's dispatcher indexes them.", nil, nil),
		nodes: prometheus.NewDesc("lockbox_manager_nodes",
			"Nodes in the cluster by role and state, as this manager's dispatcher indexes them.", []string{"role", "state"}, nil),
	}
	m.completeSent = m.messagesSent.WithLabelValues("complete")
	m.incrementalSent = m.messagesSent.WithLabelValues("incremental")
	// Every reason shows from the start, at 0: a rate over a series that
	// appears late misses its first increase.
	for _, r := range closeReasons {
		m.closed.WithLabelValues(r)
	}
	for _, r := range dropReasons {
		m.reportsDropped.WithLabelValues(r)
	}
	return m
}

func (m *metrics) sent(typ dapi.SessionMessage_Type, changes int) {
	if typ == dapi.SessionMessage_COMPLETE {
		m.completeSent.Inc()
	} else {
		m.incrementalSent.Inc()
	}
	m.changesSent.Add(float64(changes))
}

// closeReason names why Serve returned err. ctxErr is the stream
// context's error when Serve returned.
func closeReason(err, ctxErr error) string {
	switch {
	case errors.Is(err, ErrNodeRemoved):
		return reasonNodeRemoved
	case errors.Is(err, ErrRevoked):
		return reasonRevoked
	case ctxErr != nil || errors.Is(err, context.Canceled):
		return reasonDisconnected
	}
	switch status.Code(err) {
	case codes.Aborted:
		return reasonReplaced
	case codes.ResourceExhausted:
		return reasonFellBehind
	case codes.Unavailable:
		return reasonUnavailable
	}
	return reasonOther
}

// Collector returns the dispatcher's metrics for a Prometheus registry:
// the counters it keeps, and gauges read from its index at scrape time
// (no store read per scrape). Secrets are not counted: the dispatcher
// does not index them.
func (d *Dispatcher) Collector() prometheus.Collector { return collector{d} }

type collector struct{ d *Dispatcher }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	m := c.d.metrics
	m.changesSent.Describe(ch)
	m.messagesSent.Describe(ch)
	m.fanOut.Describe(ch)
	m.closed.Describe(ch)
	m.reportsDropped.Describe(ch)
	m.rowsReconciled.Describe(ch)
	ch <- m.sessions
	ch <- m.services
	ch <- m.nodes
}

type roleState struct{ role, state string }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	d, m := c.d, c.d.metrics
	m.changesSent.Collect(ch)
	m.messagesSent.Collect(ch)
	m.fanOut.Collect(ch)
	m.closed.Collect(ch)
	m.reportsDropped.Collect(ch)
	m.rowsReconciled.Collect(ch)

	nodes := map[roleState]int{}
	d.mu.Lock()
	sessions, services := len(d.sessions), 0
	if d.ix != nil {
		services = len(d.ix.services)
		for _, n := range d.ix.nodes {
			nodes[roleState{roleLabel(n.GetRole().String()), stateLabel(n.GetState().String())}]++
		}
	}
	d.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.sessions, prometheus.GaugeValue, float64(sessions))
	ch <- prometheus.MustNewConstMetric(m.services, prometheus.GaugeValue, float64(services))
	for k, v := range nodes {
		ch <- prometheus.MustNewConstMetric(m.nodes, prometheus.GaugeValue, float64(v), k.role, k.state)
	}
}

// roleLabel and stateLabel turn enum names (NODE_ROLE_WORKER,
// NODE_STATE_READY) into label values (worker, ready).
func roleLabel(s string) string  { return strings.ToLower(strings.TrimPrefix(s, "NODE_ROLE_")) }
func stateLabel(s string) string { return strings.ToLower(strings.TrimPrefix(s, "NODE_STATE_")) }

// observeFanOut records a fan-out that started with a watch event at
// since (zero for a resync, which no event started).
func (m *metrics) observeFanOut(since time.Time) {
	if !since.IsZero() {
		m.fanOut.Observe(time.Since(since).Seconds())
	}
}
