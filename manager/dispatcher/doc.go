// Package dispatcher implements the Dispatcher service: one stream per node
// carrying the grants placed on that node.
//
// A single goroutine follows the store's watch and keeps one in-memory index
// of services and nodes. For every batch of changes (watch events gathered
// for a couple of milliseconds) it re-evaluates only what changed: the
// changed services against every connected node, and every service against
// a node whose labels changed. Each connected node has a "view" (the
// services placed on it); the difference between its old and new view is
// queued on its session as INCREMENTAL changes. Nodes that held the same
// view and match the changed services the same way (the same placement)
// share one "move" per batch: its new view, diff and queued items are
// computed once, and from then on those nodes share one view (move.go);
// views are never modified, only replaced. What a session's agent announced
// it enforces (SessionRequest.features) is part of the placement: a service
// with claim rules is not placed on the node of a session that did not
// announce claim-rule enforcement (features.go), so such nodes hold other
// views than their placement peers and never share a move or a COMPLETE
// build that carries the service. Secret data is read from the
// store once per batch; each distinct change is encoded once, and its bytes
// are shared by every session that sends it and zeroed when the last of them
// (and gRPC's writer) is done with them. Sessions send these pre-encoded
// messages (type and revision encoded once per batch, the node's own header
// fields once per session), so the gRPC server must use Codec.
//
// Collector exposes the dispatcher's counters (messages and changes sent,
// sessions closed by reason, fan-out latency) and gauges read from its
// index at scrape time (sessions, services, nodes) to a Prometheus
// registry; the package registers nothing itself.
//
// A session starts with a COMPLETE message, or, when the node resumes from a
// revision etcd still holds, with the INCREMENTAL difference between its view
// at that revision and its view now. Sessions that attach with the same
// (interned) view share one COMPLETE build: its secret reads, unseals and
// encodings, kept while attaches use them (first.go). At most startSlots
// sessions start at once, so that a reconnect storm does not put every
// node's "ready" write and first reads into etcd at the same moment.
//
// Heartbeats carry the agents' mount reports (reports.go): each is
// checked against the services placed on the reporting node (a report
// about any other is dropped and counted), kept in the store's container
// table for `lockbox service ps` (ContainerTable) and appended to the
// audit log (Auditor.AppendNodeAudit: the node-reported class, with a
// retention budget of its own, so that a node's reports never push out
// what admins and managers did), under the node's certificate identity
// and this manager's clock. Now and then a heartbeat also carries the node's
// inventory, the containers its agent holds (inventory.go): after the
// beat's reports, the node's rows of containers not in it are removed
// (their WIPED reports were lost), counted and audited as reconciled.
//
// The node's identity comes only from its verified client certificate. The
// package does not issue certificates, check tokens or authorise admin
// calls; it relies on the server's TLS configuration and interceptor for
// that, and on Revoker to end the sessions of revoked nodes.
package dispatcher
