// Package metrics serves a daemon's Prometheus registry on /metrics over
// plain HTTP: a registry per daemon (never the global default one) holding
// the Go runtime and process collectors, and the listener.
//
// It knows nothing of what the daemons measure. What they register must
// never carry secret data, nor a label per container or per secret: the
// endpoint has no authentication and is meant for loopback or a
// management network.
package metrics
