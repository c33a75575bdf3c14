//go:build linux

package shim

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// TraceEnv names a file to which the shim appends one line per step of a
// container's create and delete: "<id> <step> <CLOCK_MONOTONIC ns>". Only
// the phase benchmark sets it (bench/shim_phases_test.go), to split a
// lifecycle's milliseconds by step on the same clock as its own
// timestamps. Unset, tracing costs a nil check per step: the variable is
// read once, when the shim process starts. Lines carry container IDs and
// step names only, never anything of a secret.
const TraceEnv = "LOCKBOX_SHIM_TRACE"

// tracer appends trace lines to its file; a nil tracer does nothing.
type tracer struct {
	fd int
}

// openTracer opens the file TraceEnv names, or returns nil when it is
// unset or cannot be opened (a trace is never worth failing a container).
func openTracer(getenv func(string) string) *tracer {
	p := getenv(TraceEnv)
	if p == "" {
		return nil
	}
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil
	}
	return &tracer{fd: fd}
}

// mark appends "<id> <step> <now>". One write of a short line to a file
// opened O_APPEND: lines of concurrent shims never interleave.
func (t *tracer) mark(id, step string) {
	if t == nil {
		return
	}
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return
	}
	b := make([]byte, 0, len(id)+len(step)+24)
	b = append(b, id...)
	b = append(b, ' ')
	b = append(b, step...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, ts.Nano(), 10)
	b = append(b, '\n')
	unix.Write(t.fd, b)
}

// processTracer is the tracer of this shim process (nil unless TraceEnv
// is set), opened once.
var processTracer = openTracer(os.Getenv)
