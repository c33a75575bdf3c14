// Package daemon wires the node agent together: process hardening, the
// grant cache, the session to the managers, the local API socket and,
// optionally, the NRI plugin and the Prometheus metrics listener (read at
// scrape time from the session, the grant cache and the local API). `lockbox agent` is a thin flag parser over
// Run; tests run the same code in a child process.
package daemon
