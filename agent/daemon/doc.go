// Package daemon wires the node agent together: process hardening, the
// grant cache, the session to the managers, the local API socket and,
// optionally, the NRI plugin and the Prometheus metrics listener (read at
// scrape time from the session, the grant cache and the local API). `lockbox agent` is a thin flag parser over
// Run; tests run the same code in a child process. On Windows it also holds
// the service control manager's side of the agent (service_windows.go: run
// under the SCM, log to the event log, install with recovery actions).
package daemon
