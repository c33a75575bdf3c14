//go:build linux && shim_tracing

package main

// As the stock runc shim: OpenTelemetry tracing only under the shim_tracing
// build tag (always on, it cost the shim about 10%).
import _ "github.com/containerd/containerd/v2/pkg/tracing/plugin"
