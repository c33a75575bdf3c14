// Package daemon wires the node agent together: process hardening, the
// grant cache, the session to the managers, the local API socket and,
// optionally, the NRI plugin. `lockbox agent` is a thin flag parser over
// Run; tests run the same code in a child process.
package daemon
