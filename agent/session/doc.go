// Package session is the agent's side of the control plane: it joins the
// cluster with a worker token (pki.Join, which pins the root CA by the
// token's digest, the same join a manager makes),
// keeps the node's key and certificate in the state directory and renews the
// certificate before it expires, and holds one Dispatcher.Session stream to
// some manager, feeding every message to the grant cache. Each session
// announces what this agent enforces (api/dispatcher.AgentFeatures): a
// manager withholds services with claim rules from an agent that does not.
//
// When every manager is gone it keeps retrying, with jittered exponential
// backoff, across every manager it has heard of (the flag, the join answer
// and the stream's managers field, persisted as addresses only); the cache
// goes on serving what it holds. On reconnect it resumes from the last
// revision it applied.
//
// Heartbeats carry the agent's mount reports (reports.go) and, on the
// first beat of each session and after reports were dropped or refused,
// the inventory of the containers the agent holds (inventory.go), from
// which the managers correct `service ps` when a WIPED report was lost.
//
// It never writes secret data: the state directory holds credentials (key,
// certificate, root CA) and manager addresses, nothing else.
package session
