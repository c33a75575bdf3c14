//go:build linux

package shim

import (
	"os"

	"github.com/lockbox-project/lockbox/internal/steptrace"
)

// TraceEnv names a file to which the shim appends one line per step of a
// container's create and delete (internal/steptrace, shared with the
// agent). Only the phase benchmark sets it (bench/shim_phases_test.go).
// Unset, tracing costs a nil check per step: the variable is read once,
// when the shim process starts.
const TraceEnv = steptrace.Env

// processTracer is the tracer of this shim process (nil unless TraceEnv
// is set), opened once.
var processTracer = steptrace.Open(os.Getenv)
